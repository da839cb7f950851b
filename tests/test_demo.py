"""`bsmamba2 demo` end to end on a tiny model, the spectrogram helpers, and the GPU-run packing helpers
(scripts/runpack.py) and study configs (scripts/study.py) that the demo's bundled model comes from."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2 import api, demo, plots
from bsmamba2.cli import main
from bsmamba2.evaluate.metrics import usdr

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---- the demo ---------------------------------------------------------------------------------------------
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


def test_example_is_deterministic() -> None:
    a = demo.make_example(1.0, "dense", 3)
    b = demo.make_example(1.0, "dense", 3)
    c = demo.make_example(1.0, "dense", 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_score_of_silent_reference_is_none() -> None:
    x = np.ones((2, 100), np.float32)
    assert demo.score(np.zeros_like(x), x, x)["usdr"] is None
    s = demo.score(x, x, 2 * x)
    assert s["usdr_mixture"] == pytest.approx(0.0, abs=1e-6) and s["usdr"] > 60


# ---- plots ------------------------------------------------------------------------------------------------
def test_mel_filterbank_peaks_in_order() -> None:
    fb = plots.mel_filterbank(40, 2048, SR)
    assert fb.shape == (40, 1025) and fb.min() >= 0 and fb.max() <= 1 + 1e-9
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]


def test_spectrogram_db_finds_a_tone() -> None:
    t = np.arange(SR) / SR
    low, high = np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 5000 * t)
    s_low, s_high = plots.spectrogram_db(low, SR), plots.spectrogram_db(np.stack([high, high]), SR)
    assert s_low.shape[0] == 128
    assert s_low.mean(axis=1).argmax() < s_high.mean(axis=1).argmax()
    lin = plots.spectrogram_db(low, SR, n_mels=None)
    assert abs(lin.mean(axis=1).argmax() * SR / 2048 - 220) < SR / 2048


def test_save_spectrograms_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    x = np.random.default_rng(0).standard_normal((2, SR // 2)).astype(np.float32)
    p = plots.save_spectrograms(
        tmp_path / "f.png", {"a": x, "b": 0.1 * x}, SR, title="t", regions=[(0.1, 0.2)]
    )
    assert p.read_bytes()[:4] == b"\x89PNG"


# ---- GPU-run helpers --------------------------------------------------------------------------------------
def test_second_moment_factorisation() -> None:
    rp = _script("runpack")
    r, c = torch.rand(6) + 0.1, torch.rand(5, 3) + 0.1
    v = torch.outer(r, c.flatten()).reshape(6, 5, 3)  # rank 1: reconstructed exactly
    torch.testing.assert_close(rp.unfactor_second_moment(rp.factor_second_moment(v), v.shape), v)
    w = torch.rand(7)  # 1-D: stored whole
    torch.testing.assert_close(rp.unfactor_second_moment(rp.factor_second_moment(w), w.shape), w)
    u = torch.rand(4, 9)  # general: the approximation keeps the row and column means
    approx = rp.unfactor_second_moment(rp.factor_second_moment(u), u.shape)
    torch.testing.assert_close(approx.mean(1), u.mean(1))
    torch.testing.assert_close(approx.mean(0), u.mean(0))


def test_parse_training_log() -> None:
    rp = _script("runpack")
    log = "\n".join([
        "2026-01-01 00:00:00,000 INFO bsmamba2.train.loop: step 50  loss 1.2345 (time 0.1000, stft 0.2345)  grad norm 0.500  lr 5.00e-04  3.20 steps/s",
        "2026-01-01 00:00:01,000 INFO bsmamba2.train.loop: step 100  loss 1.0000 (time 0.0900, stft 0.1000)  grad norm 0.400  lr 5.00e-04  3.10 steps/s",
        "2026-01-01 00:00:02,000 INFO bsmamba2.train.loop: step 100  valid uSDR 4.250 dB  cSDR 3.900 dB  (best usdr 4.250 at step 100)",
        "2026-01-01 00:00:03,000 INFO bsmamba2.train.loop: saved runs/x/checkpoints/step_000100",
    ])  # fmt: skip
    rows = rp.parse_log(log)
    assert [(r["step"], r["kind"]) for r in rows] == [(50, "train"), (100, "train"), (100, "valid")]
    assert rows[0]["loss"] == 1.2345 and rows[0]["lr"] == 5e-4 and rows[1]["steps_per_s"] == 3.1
    assert rows[2]["usdr"] == 4.25 and rows[2]["csdr"] == 3.9
    line = rp.summary_line("x", rows)
    assert "step 100" in line and "best 4.25 at step 100" in line


def test_study_configs_match_in_size_and_default_fits_15mb() -> None:
    study = _script("study")
    n_mamba = study.count_params(REPO / "configs/study_bsmamba2.yaml")
    n_rof = study.count_params(REPO / "configs/study_bsroformer.yaml")
    n_small = study.count_params(REPO / "configs/default_small.yaml")
    assert abs(n_rof / n_mamba - 1) < 0.05
    assert 5e6 <= n_small <= 7e6 and 2 * n_small <= 15e6  # bf16 weights of the bundled model
    assert math.isclose(n_small, n_mamba)  # the shipped model is the study's BSMamba2 arm
