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

import bsmamba2.cli.export as cli_export
from bsmamba2 import api, cli
from bsmamba2.checkpoints import load_model
from bsmamba2.onnx import exporter
from bsmamba2.onnx.runtime import OnnxModel

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
def test_export_defaults_to_the_bundled_model(
    paper_layout_export: tuple[Path, Path], write_audio: Callable[..., Path], tmp_path: Path
) -> None:
    """``bsmamba2 export -o F`` with no MODEL exports the bundled model, and ``separate --engine onnx`` with the
    file gives torch's vocals and instrumental.

    The export itself is conftest's ``paper_layout_export``: that CLI call, with the default pointed at a
    stand-in of the bundled model's layout scaled down (one export of the real one costs ~1.5 min; it is
    test_exported_bundled_model_separates_like_torch, ``pytest -m fullsize``). Here: the CLI's default is the
    bundled file ``separate`` loads, the stand-in has its layout, and the file the default named was exported."""
    weights, exported = paper_layout_export
    assert cli_export.DEFAULT_MODEL == api.DEFAULT_MODEL and api.DEFAULT_MODEL.is_file()
    bundled, stand_in = load_model(api.DEFAULT_MODEL).cfg, OnnxModel(exported)
    layout = (
        "mixer",
        "stems",
        "audio_channels",
        "sample_rate",
        "n_fft",
        "hop_length",
        "band_widths",
        "causal",
    )
    assert [getattr(stand_in.cfg, k) for k in layout] == [getattr(bundled, k) for k in layout]
    assert stand_in.metadata["source"] == weights.name
    song = write_audio("song.wav", seconds=1.5)
    separate_both(exported, weights, song, tmp_path, "--segment", "1.0")
    assert_same_stems(tmp_path, ("vocals", "instrumental"))


@pytest.mark.fullsize
def test_exported_bundled_model_separates_like_torch(
    write_audio: Callable[..., Path], tmp_path: Path
) -> None:
    """The bundled model itself through ``bsmamba2 export`` (no MODEL) and ``separate --engine onnx``.

    A full export (~1.5 min on a 2-core CPU), so not part of ``make test``: run it by hand with
    ``pytest -m fullsize tests/test_onnx_cli.py``. ``make test`` runs test_export_defaults_to_the_bundled_model."""
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
    replay_onnx_trace: Callable[[Path], list[dict[str, object]]],
) -> None:
    """--backend triton is switched to the reference with a log line; a graph that fails its self-check
    (forced here) is reported in one line and never written. The trace is replayed from the small model's
    export (what is tested happens after it)."""
    weights, exported = small_files(tmp_path_factory)
    traces = replay_onnx_trace(exported)

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
    assert len(traces) == 1
