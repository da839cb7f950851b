"""Per-track scores (bsmamba2.evaluate.scoring): the ``score_track`` contract that validation relies on, and
the evaluation's per-track report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bsmamba2.evaluate import metrics
from bsmamba2.evaluate.scoring import score_stem, score_track, track_report

SR = 44100


def _signals() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    refs = {s: (0.3 * rng.standard_normal((2, 3 * SR))).astype(np.float32) for s in ("vocals", "drums")}
    est = {s: (r + 0.1 * rng.standard_normal(r.shape)).astype(np.float32) for s, r in refs.items()}
    return est, refs


def test_score_track_scores_every_reference_stem() -> None:
    est, refs = _signals()
    est["bass"] = np.zeros_like(est["vocals"])  # an estimate without a reference is not scored
    scores = score_track(est, refs)
    assert list(scores) == ["vocals", "drums"]
    for s, ref in refs.items():
        assert scores[s] == {"usdr": metrics.usdr(ref, est[s]), "csdr": metrics.csdr(ref, est[s])}
        assert all(isinstance(v, float) for v in scores[s].values())
    with pytest.raises(ValueError, match="drums"):
        score_track({"vocals": est["vocals"]}, refs)


def test_frames_follow_the_sample_rate() -> None:
    est, refs = _signals()
    s = score_stem(refs["vocals"], est["vocals"], sample_rate=SR // 2)  # 0.5 s frames at this rate
    assert s.frames.shape == (6,) and s.csdr == metrics.nanmedian(s.frames)


def test_track_report_scores_estimated_stems_and_vocal_regions() -> None:
    est, refs = _signals()
    report = track_report(refs, {"vocals": est["vocals"]}, SR, regions=[(0, SR), (SR, 3 * SR)])
    assert list(report["stems"]) == ["vocals"]
    v = report["stems"]["vocals"]
    assert len(v["csdr_frames"]) == 3 and v["csdr"] == metrics.nanmedian(np.array(v["csdr_frames"]))
    assert [r["bucket"] for r in report["vocal_regions"]] == ["1-2s", "2-4s"]
    perfect = track_report(refs, {"drums": refs["drums"].copy()}, SR)
    assert perfect["stems"]["drums"]["csdr"] == math.inf and "vocal_regions" not in perfect


def test_track_report_adds_vocal_leakage_only_with_the_mixture() -> None:
    est, refs = _signals()
    refs["vocals"][:, 2 * SR :] = 0.0  # no voice in the last second
    mix = refs["vocals"] + refs["drums"]
    plain = track_report(refs, est, SR)
    with_mix = track_report(refs, est, SR, mixture=mix)
    assert "vocal_leakage" not in plain
    # what was recorded before is unchanged (compared as JSON text: the silent frame's NaN equals itself there)
    before = {k: v for k, v in with_mix.items() if k != "vocal_leakage"}
    assert json.dumps(before, sort_keys=True) == json.dumps(plain, sort_keys=True)
    leak = with_mix["vocal_leakage"]
    assert leak["silence_from"].startswith("below") and leak["silent_seconds"] == pytest.approx(1.0, abs=0.05)
    exact = track_report(refs, est, SR, mixture=mix, phrases=[(0, 2 * SR)])["vocal_leakage"]
    assert exact["silence_from"] == "meta.json" and exact["silent_seconds"] == 1.0
    silent = slice(2 * SR, None)
    expected = np.sum(est["vocals"][:, silent].astype(np.float64) ** 2) / np.sum(
        mix[:, silent].astype(np.float64) ** 2
    )
    assert exact["leakage_db"] == pytest.approx(10 * math.log10(expected), abs=1e-9)
    assert "vocal_leakage" not in track_report(refs, {"drums": est["drums"]}, SR, mixture=mix)
