"""``bsmamba2 convert`` (bsmamba2.cli.convert) and loading the official file directly."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from faults import enospc, one_line_error, tiny_tmpfs
from official_samples import assert_landed, small_cfg, write_small_official

from bsmamba2.checkpoints import load_model, ours
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


# ---- I/O faults: a one-line error, exit 1, nothing partial ------------------------------------------------


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_convert_into_an_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = write_small_official(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the output folder should be")  # refused even to root, unlike chmod
    assert main(["convert", str(path), "-o", str(blocker / "model.safetensors")]) == 1
    line = one_line_error(capsys.readouterr().err, "convert")
    assert "file.txt" in line
    assert _listing(tmp_path) == ["file.txt", "official.ckpt"]


def test_convert_onto_a_full_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = write_small_official(tmp_path)
    with tiny_tmpfs(tmp_path / "full", size="64k") as full:  # the small model's file is ~150 kB
        assert main(["convert", str(path), "-o", str(full / "model.safetensors")]) == 1
        line = one_line_error(capsys.readouterr().err, "convert")
        assert "No space left on device" in line and "model.safetensors" in line
        assert _listing(full) == []


def test_convert_write_error_is_one_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # where no tmpfs can be mounted: the same disk-full error, raised half-way through the write
    path, _, _ = write_small_official(tmp_path)
    real = ours.write_bytes

    def half_then_full(target: Path, data: bytes) -> None:
        real(target, data[: len(data) // 2])
        raise enospc(target)

    monkeypatch.setattr(ours, "write_bytes", half_then_full)
    out = tmp_path / "out"
    assert main(["convert", str(path), "-o", str(out / "model.safetensors")]) == 1
    line = one_line_error(capsys.readouterr().err, "convert")
    assert "No space left on device" in line
    assert _listing(out) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_model_follows_the_umask(tmp_path: Path, umask: int) -> None:
    path, _, _ = write_small_official(tmp_path)
    out = tmp_path / "model.safetensors"
    old = os.umask(umask)
    try:
        assert main(["convert", str(path), "-o", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not safetensors' own 0600
