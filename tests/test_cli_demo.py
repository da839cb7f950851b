"""``bsmamba2 demo`` end to end on a tiny model, and its errors before any work."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import api
from bsmamba2.cli import main
from bsmamba2.evaluate.metrics import usdr

SR = 44100


def test_demo_end_to_end(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo_out"
    # 2 s of "dense" vocals with seed 0: one phrase at 0.59-1.91 s, so the uSDR is defined
    args = [
        "demo",
        "-o",
        str(out),
        "--model",
        str(tiny_model_path),
        "--seconds",
        "2",
        "--preset",
        "dense",
        "--seed",
        "0",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("example_mixture.wav", "example_true_vocals.wav", "example_mixture/vocals.wav",
                 "example_mixture/instrumental.wav", "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    mix, sr = sf.read(out / "example_mixture.wav", dtype="float32", always_2d=True)
    ref, _ = sf.read(out / "example_true_vocals.wav", dtype="float32", always_2d=True)
    voc, _ = sf.read(out / "example_mixture/vocals.wav", dtype="float32", always_2d=True)
    inst, _ = sf.read(out / "example_mixture/instrumental.wav", dtype="float32", always_2d=True)
    assert sr == SR and mix.shape == ref.shape == voc.shape == (2 * SR, 2)
    assert np.any(ref) and not np.array_equal(ref, mix)
    np.testing.assert_allclose(voc + inst, mix, atol=1e-5)  # the two outputs add up to the input
    m = json.loads((out / "metrics.json").read_text())
    # the printed / saved numbers are the uSDR of the files on disk
    assert m["usdr"] == pytest.approx(usdr(ref.T, voc.T), abs=1e-6)
    assert m["usdr_mixture"] == pytest.approx(usdr(ref.T, mix.T), abs=1e-6)
    assert m["improvement"] == pytest.approx(m["usdr"] - m["usdr_mixture"])
    assert m["example"]["phrases"] and all(0 <= a < b <= 2.0 for a, b in m["example"]["phrases"])
    assert f"vocals uSDR: {m['usdr']:.2f} dB" in printed
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_missing_default_model_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(api, "DEFAULT_MODEL", tmp_path / "assets" / "default.safetensors")
    assert main(["demo", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bundled model" in err and "--model" in err
    assert not (tmp_path / "out").exists()  # failed before any work
