"""Training checkpoint folders (bsmamba2.train.ckpt): complete files with the umask's mode, flushed to disk,
no temp files left, ``last`` / ``best`` pointers."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bsmamba2 import atomic
from bsmamba2.checkpoints import load_state
from bsmamba2.config import ModelConfig
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
