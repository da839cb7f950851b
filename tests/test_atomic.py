"""atomic_write: the final name appears only complete, with umask permissions; errors leave nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bsmamba2.atomic import atomic_write


def test_atomic_write_renames_into_place_with_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.bin"
    old = os.umask(0o022)
    try:
        with atomic_write(target, durable=True) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"abc")
            os.chmod(tmp, 0o600)  # as safetensors' save_file leaves its output
            assert not target.exists()
    finally:
        os.umask(old)
    assert target.read_bytes() == b"abc"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]


def test_atomic_write_error_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_signals_deferred_holds_ctrl_c_until_the_block_ends() -> None:
    """A Ctrl-C inside the block does not interrupt it; its KeyboardInterrupt comes as the block ends, and the
    handler in place before is back afterwards."""
    import signal

    from bsmamba2.atomic import signals_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the interpreter checks for signals along the way
                pass
            done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
