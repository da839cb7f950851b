"""Injected faults for the bad-input tests of convert / train / checkpoints: a really full filesystem (a tiny
tmpfs, where the tests run as root and may mount) and the error line checks shared by those tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` for the block, unmounted after; skips the test where the
    process may not mount (not root, or a container without the right)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def one_line_error(err: str, command: str) -> str:
    """The error of a failed command: one line ``bsmamba2 COMMAND: error: ...`` (INFO lines may precede
    it), no traceback; returns that line."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error:" in line or "Error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"bsmamba2 {command}: error:"), err
    assert len(errors[0]) < 400, errors[0]
    return errors[0]


def enospc(path: str | os.PathLike[str] = "") -> OSError:
    return OSError(28, os.strerror(28), str(path))
