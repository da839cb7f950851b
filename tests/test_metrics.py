"""uSDR / cSDR (bsmamba2.evaluate.metrics): closed-form values, museval's framing and silence rules, and
agreement with museval's own BSS Eval v4 code when it is installed."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from bsmamba2.evaluate import metrics


def _museval_metrics() -> ModuleType | None:
    """museval.metrics loaded from its file: ``import museval`` pulls in musdb -> stempeg, which refuses to
    import without ffmpeg, but the metrics module itself only needs numpy and scipy."""
    spec = importlib.util.find_spec("museval")
    if spec is None or spec.origin is None or importlib.util.find_spec("scipy") is None:
        return None
    path = Path(spec.origin).parent / "metrics.py"
    mspec = importlib.util.spec_from_file_location("_museval_metrics", path)
    assert mspec is not None and mspec.loader is not None
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def test_usdr_closed_form() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5000))
    # estimate = 0.9 * ref: error energy = 0.01 * signal energy -> 20 dB (up to the 1e-7 terms)
    assert metrics.usdr(ref, 0.9 * ref) == pytest.approx(20.0, abs=1e-6)
    assert metrics.usdr(np.zeros((2, 10)), np.zeros((2, 10))) == 0.0  # eps / eps
    assert metrics.usdr(torch.from_numpy(ref), torch.from_numpy(ref)) > 100
    with pytest.raises(ValueError, match="shape"):
        metrics.usdr(ref, ref[:, :-1])


def test_usdr_per_item_matches_usdr() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2, 2, 400, generator=g)
    est = ref + 0.3 * torch.randn(3, 2, 2, 400, generator=g)
    batch = metrics.usdr_per_item(ref, est)
    assert batch.shape == (3, 2)
    assert batch[1, 0].item() == pytest.approx(metrics.usdr(ref[1, 0], est[1, 0]), abs=1e-9)


def test_framing_follows_museval() -> None:
    assert metrics.frame_slices(44100 * 3 + 500) == [slice(i * 44100, (i + 1) * 44100) for i in range(3)]
    assert metrics.frame_slices(44100) == [slice(0, 44100)]
    assert metrics.frame_slices(1000) == [slice(0, 1000)]  # shorter than a window: one frame of it all
    assert metrics.frame_slices(0) == []


def test_csdr_frames_and_silence() -> None:
    rng = np.random.default_rng(1)
    w = 1000
    ref = rng.standard_normal((2, 4 * w))
    est = ref.copy()
    est[:, 0:w] *= 0.9  # 20 dB
    est[:, w : 2 * w] = 0.0  # silent estimate -> NaN
    ref[:, 2 * w : 3 * w] = np.array([1.0, -1.0])[:, None]  # channels cancel: museval calls it silent -> NaN
    est[:, 3 * w :] += 0.1 * ref[:, 3 * w :]  # 1.1x -> 20 dB
    frames = metrics.sdr_frames(ref, est, window=w, hop=w)
    assert frames[0] == pytest.approx(20.0) and frames[3] == pytest.approx(20.0)
    assert math.isnan(frames[1]) and math.isnan(frames[2])
    assert metrics.csdr(ref, est, window=w, hop=w) == pytest.approx(20.0)
    assert math.isnan(metrics.csdr(np.zeros((2, 3 * w)), est[:, : 3 * w], window=w))
    assert metrics.sdr_frames(ref, ref, window=w)[0] == np.inf


def test_aggregate_uses_the_papers_statistics() -> None:
    rows = [
        {"usdr": 1.0, "csdr": 1.0},
        {"usdr": 2.0, "csdr": 2.0},
        {"usdr": 9.0, "csdr": 9.0},
        {"usdr": float("nan"), "csdr": float("nan")},
    ]
    agg = metrics.aggregate(rows)
    assert agg["usdr_mean"] == pytest.approx(4.0)
    assert agg["csdr_median"] == pytest.approx(2.0)
    assert agg["tracks"] == agg["csdr_tracks"] == 3  # the NaN row is not averaged, so not counted
    rows[3]["usdr"] = 5.0  # e.g. a silent reference: its uSDR exists, its cSDR frames are all NaN
    agg = metrics.aggregate(rows)
    assert agg["usdr_mean"] == pytest.approx(17 / 4) and (agg["tracks"], agg["csdr_tracks"]) == (4, 3)


@pytest.mark.parametrize("length", [44100 * 2 + 1234, 30000])
def test_csdr_matches_museval(length: int) -> None:
    museval = _museval_metrics()
    if museval is None:
        pytest.skip("museval (and scipy) not installed")
    rng = np.random.default_rng(length)
    ref = rng.standard_normal((2, length)).astype(np.float32)
    # a filtered, noisy estimate (the distortion filters are non-trivial) with one silent frame
    est = np.stack([np.convolve(c, [0.6, 0.3, -0.1], "same") for c in ref]).astype(np.float32)
    est += 0.2 * rng.standard_normal((2, length)).astype(np.float32)
    if length > 44100 * 2:
        est[:, 44100 : 2 * 44100] = 0.0
    sdr, _, _, _, _ = museval.bss_eval(ref.T[None], est.T[None], window=44100, hop=44100)
    ours = metrics.sdr_frames(ref, est)
    np.testing.assert_allclose(ours, sdr[0], atol=1e-3, equal_nan=True)
    assert metrics.csdr(ref, est) == pytest.approx(float(np.nanmedian(sdr[0])), abs=1e-3)
