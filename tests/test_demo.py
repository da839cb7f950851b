"""The demo's library part (the example song, its score), the spectrogram helpers, and the GPU-run
packing helpers (scripts/runpack.py) and study configs (scripts/study.py) that the demo's bundled model comes from."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from bsmamba2 import demo, plots

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---- the demo's library part ----------------------------------------------------------------------
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
