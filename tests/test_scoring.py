"""Per-track scores (bsmamba2.evaluate.scoring): the ``score_track`` contract that validation relies on, and
the evaluation's per-track report."""

from __future__ import annotations

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
