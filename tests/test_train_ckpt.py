"""Training checkpoint folders (bsmamba2.train.ckpt): complete files with the umask's mode, flushed to disk,
no temp files left, ``last`` / ``best`` pointers."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bsmamba2 import atomic
from bsmamba2.checkpoints import load_state
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.model import build_model
from bsmamba2.train import ckpt


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every path handed to fsync_path, in order (the real fsync still runs)."""
    calls: list[Path] = []
    real = atomic.fsync_path

    def record(path: Path) -> None:
        calls.append(Path(path))
        real(path)

    monkeypatch.setattr(atomic, "fsync_path", record)
    monkeypatch.setattr(ckpt, "fsync_path", record)
    yield calls


def test_save_checkpoint_files_are_durable_and_complete(tmp_path: Path, fsynced: list[Path]) -> None:
    torch.manual_seed(0)
    model, ema = build_model(ModelConfig.tiny()), build_model(ModelConfig.tiny())
    root = tmp_path / "checkpoints"
    old = os.umask(0o022)
    try:
        path = ckpt.save_checkpoint(
            root, 3, model, ema, {"format": ckpt.STATE_FORMAT, "step": 3}, {"step": 3}
        )
    finally:
        os.umask(old)
    names = ["ema.safetensors", "meta.json", "model.safetensors", "state.pt"]
    assert sorted(p.name for p in path.iterdir()) == names
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_000003"]  # no temp folder or link left
    for name in names:
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o644, name
    assert json.loads((path / "meta.json").read_text()) == {"step": 3}
    assert torch.load(path / "state.pt", weights_only=True)["step"] == 3
    cfg, state = load_state(path / "ema.safetensors")
    assert cfg == ema.cfg and all(torch.equal(state[k], v) for k, v in ema.state_dict().items())
    assert (root / "last").resolve() == path.resolve()

    # Each file is flushed under its temp name (then renamed), the step folder after each rename, the
    # checkpoint root after the folder rename and again after the ``last`` link.
    files = [p for p in fsynced if p.parent.name.startswith(".tmp_step_") and p.name.startswith(".")]
    assert sorted(p.name.split(".")[1] for p in files) == ["ema", "meta", "model", "state"]
    assert fsynced[-2:] == [root, root]


def test_point_replaces_a_link(tmp_path: Path, fsynced: list[Path]) -> None:
    for name in ("step_000001", "step_000002"):
        (tmp_path / name).mkdir()
    ckpt.point(tmp_path, "best", "step_000001")
    ckpt.point(tmp_path, "best", "step_000002")
    assert os.readlink(tmp_path / "best") == "step_000002"  # relative: the run folder can move
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step_000001", "step_000002"]
    assert fsynced == [tmp_path, tmp_path]


# ---- resume: the newest complete, loadable checkpoint; stale leftovers cleaned ---------------------------


def _run_with_checkpoints(root: Path, steps: tuple[int, ...]) -> dict[int, Path]:
    torch.manual_seed(0)
    model, ema = build_model(ModelConfig.tiny()), build_model(ModelConfig.tiny())
    return {
        s: ckpt.save_checkpoint(root, s, model, ema, {"format": ckpt.STATE_FORMAT, "step": s}, {"step": s})
        for s in steps
    }


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["state.pt", "model.safetensors", "ema.safetensors", "meta.json"])
def test_resume_skips_a_damaged_newest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damaged: str
) -> None:
    root = tmp_path / "run" / "checkpoints"
    folders = _run_with_checkpoints(root, (1, 2, 3))
    _truncate(folders[3] / damaged)
    with caplog.at_level(logging.WARNING, logger="bsmamba2"):
        for given in (tmp_path / "run", root, root / "last"):
            assert ckpt.choose_resume(given) == folders[2]
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert skipped and all("step_000003" in m and damaged in m for m in skipped)


def test_resume_of_a_named_damaged_checkpoint_or_of_none_intact_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    folders = _run_with_checkpoints(root, (1, 2))
    _truncate(folders[2] / "state.pt")
    with pytest.raises(CheckpointError, match="step_000002.*state.pt"):  # asked for this one: no fallback
        ckpt.choose_resume(folders[2])
    _truncate(folders[1] / "model.safetensors")
    with pytest.raises(UserError, match="no loadable checkpoint.*step_000002.*step_000001"):
        ckpt.choose_resume(root)


def test_stale_leftovers_are_cleaned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "checkpoints"
    folders = _run_with_checkpoints(root, (1, 2))
    (root / "step_000004").mkdir()  # a folder without state.pt (e.g. files deleted by hand)
    (root / "step_000004" / "model.safetensors").write_bytes(b"half")
    (root / ".tmp_step_000003_99999").mkdir()  # a run killed while writing
    (root / ".tmp_step_000003_99999" / "state.pt").write_bytes(b"half")
    os.symlink("step_000001", root / ".last.tmp99999")  # killed between the link and its rename
    # killed in the middle of replacing step 2 by a new copy: the old copy is the only complete one
    folders[2].rename(root / ".old_step_000002_99999")
    with caplog.at_level(logging.INFO, logger="bsmamba2"):
        ckpt.clean_stale(root)
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_000001", "step_000002"]
    assert (root / "step_000002" / "state.pt").is_file() and (root / "last").resolve() == folders[2]
    removed = " ".join(r.getMessage() for r in caplog.records)
    assert "step_000004" in removed and ".tmp_step_000003_99999" in removed


def test_a_dangling_last_link_points_at_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    folders = _run_with_checkpoints(root, (1, 2))
    ckpt.point(root, "best", "step_000002")
    (folders[2] / "state.pt").unlink()  # step 2 is now incomplete: it goes, and the links with it
    ckpt.clean_stale(root)
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_000001"]
    assert (root / "last").resolve() == folders[1]
