"""``bsmamba2 export`` and ``bsmamba2 separate --engine onnx`` end to end: the exported model's stems match the
torch engine's, and bad arguments or files end in one line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from onnx_samples import small_files

from bsmamba2 import cli
from bsmamba2.onnx import exporter

FAST = ["--segment", "0.25", "--bit-depth", "float", "--device", "cpu"]


def one_line_error(err: str) -> None:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and len(errors[0]) < 400, err


def separate_both(onnx_file: Path, torch_file: Path | None, song: Path, out: Path, *extra: str) -> None:
    """Separate ``song`` with the onnx engine into out/onnx and with the torch engine (fp32) into out/torch."""
    torch_model = ["--model", str(torch_file)] if torch_file is not None else []
    onnx_args = [str(song), "-o", str(out / "onnx"), "--model", str(onnx_file), "--engine", "onnx"]
    assert cli.main(["separate", *onnx_args, *FAST, *extra]) == 0
    torch_args = [str(song), "-o", str(out / "torch"), *torch_model, "--engine", "torch"]
    assert (
        cli.main(["separate", *torch_args, "--precision", "fp32", "--backend", "torch", *FAST, *extra]) == 0
    )


def assert_same_stems(out: Path, names: tuple[str, ...]) -> None:
    for name in names:
        got, sr1 = sf.read(str(out / "onnx" / "song" / f"{name}.wav"), always_2d=True)
        want, sr2 = sf.read(str(out / "torch" / "song" / f"{name}.wav"), always_2d=True)
        assert sr1 == sr2 and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), name


def test_exported_small_model_separates_like_torch(
    tmp_path_factory: pytest.TempPathFactory, write_audio: Callable[..., Path], tmp_path: Path
) -> None:
    weights, exported = small_files(tmp_path_factory)
    song = write_audio("song.wav", seconds=0.7, sr=22050)  # resampled to the model's 44.1 kHz and back
    separate_both(exported, weights, song, tmp_path)
    assert_same_stems(tmp_path, ("vocals", "drums"))


@pytest.mark.slow
def test_exported_bundled_model_separates_like_torch(
    write_audio: Callable[..., Path], tmp_path: Path
) -> None:
    exported = tmp_path / "bundled.onnx"
    assert cli.main(["export", "-o", str(exported)]) == 0  # MODEL defaults to the bundled model
    song = write_audio("song.wav", seconds=1.5)
    separate_both(exported, None, song, tmp_path, "--segment", "1.0")
    assert_same_stems(tmp_path, ("vocals", "instrumental"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "model.txt"], "must name a .onnx file"),
        (["--opset", "17", "-o", "m.onnx"], "opset must be at least 18"),
        (["no_such_model.safetensors", "-o", "m.onnx"], "no such model file"),
    ],
)
def test_export_argument_errors(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", *args]) == 1
    err = capsys.readouterr().err
    one_line_error(err)
    assert message in err


def test_export_keeps_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert cli.main(["export", "-o", str(out)]) == 1
    one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 300])
def test_separate_with_a_corrupt_onnx_file(
    content: bytes, write_audio: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    song = write_audio("song.wav", seconds=0.2)
    assert cli.main(["separate", str(song), "--model", str(bad), "--engine", "onnx"]) == 1
    err = capsys.readouterr().err
    one_line_error(err)
    assert "not a readable ONNX model" in err


def test_triton_switch_and_a_failed_check_leave_no_file(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--backend triton is switched to the reference with a log line; a graph that fails its self-check
    (forced here) is reported in one line and never written."""
    weights, _ = small_files(tmp_path_factory)

    def differs(path: Path, core: object, frames: object = None, name: str | None = None) -> float:
        raise exporter.ExportError(f"{name}: the exported graph differs from torch by 1.00e+00 (relative)")

    monkeypatch.setattr(exporter, "check_export", differs)
    out = tmp_path / "m.onnx"
    with caplog.at_level(logging.INFO):
        assert cli.main(["export", str(weights), "-o", str(out), "--backend", "triton"]) == 1
    assert "Triton kernels cannot be exported" in caplog.text
    err = capsys.readouterr().err
    one_line_error(err)
    assert "differs from torch" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".part" in p.name]
