"""``bsmamba2 convert`` (bsmamba2.cli.convert) and loading the official file directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_samples import assert_landed, small_cfg, write_small_official

from bsmamba2.checkpoints import load_model
from bsmamba2.cli import main


def test_load_model_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, raw, ema = write_small_official(tmp_path)
    model = load_model(path)  # a .ckpt goes through the format registry to the official loader
    assert_landed(dict(model.state_dict()), raw)
    with torch.no_grad():
        assert model(torch.randn(1, 2, 100)).shape == (1, 1, 2, 100)

    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(path), "-o", str(out), "--ema", "--stems", "voice"]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = load_model(out)
    assert converted.cfg == small_cfg(stems=("voice",))
    assert_landed(dict(converted.state_dict()), dict(zip(raw, ema)))

    assert (
        main(["convert", str(out), "-o", str(tmp_path / "again.safetensors")]) == 1
    )  # already ours: one-line error, exit code 1
    err = capsys.readouterr().err
    assert "already a bsmamba2 model" in err and err.count("\n") == 1
