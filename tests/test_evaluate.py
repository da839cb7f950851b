"""Evaluation studies (vocal regions, floor/ceiling baselines), the summary; ``bsmamba2 evaluate`` itself is
in test_cli_evaluate.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bsmamba2.evaluate import metrics, studies
from bsmamba2.evaluate.report import summarize, summary_markdown, write_json
from bsmamba2.evaluate.scoring import track_report

SR = 44100


def _bursts(spans: list[tuple[float, float]], seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros((2, t.size))
    for s, e in spans:
        m = (t >= s) & (t < e)
        x[:, m] = 0.5 * np.sin(2 * np.pi * 200 * t[m])
    return x


def test_vocal_regions_find_bursts_and_bridge_short_gaps() -> None:
    # 1.5 s phrase; 3 s phrase with a 50 ms stop inside; a 0.2 s blip (dropped); a 5 s phrase
    x = _bursts([(0.5, 2.0), (3.0, 4.0), (4.05, 6.0), (6.5, 6.7), (7.0, 9.9)], seconds=10.0)
    regions = studies.vocal_regions(x, SR)
    durations = [(e - s) / SR for s, e in regions]
    assert len(regions) == 3
    assert durations == pytest.approx([1.5, 3.0, 2.9], abs=0.06)
    assert [studies.bucket_of(d) for d in durations] == ["1-2s", "2-4s", "2-4s"]
    assert studies.vocal_regions(np.zeros((2, SR)), SR) == []
    assert (
        studies.bucket_of(0.5) is None and studies.bucket_of(4.0) == "4-8s" and studies.bucket_of(8.0) is None
    )


def test_regions_from_meta_and_scores() -> None:
    meta = {
        "sample_rate": 22050,
        "phrases": [{"start": 1.0, "end": 2.5, "start_sample": 22050, "end_sample": 55125}],
    }
    assert studies.regions_from_meta(meta, SR) == [(44100, 110250)]
    assert studies.regions_from_meta({"phrases": [{"start": 0.5, "end": 1.0}]}, SR) == [(22050, 44100)]
    ref = _bursts([(1.0, 2.5)], seconds=3.0)
    est = ref.copy()
    est[:, 44100:110250] *= 0.9  # 20 dB inside the region
    scores = studies.region_scores(ref, est, [(44100, 110250)], SR)
    assert scores[0].bucket == "1-2s" and scores[0].usdr == pytest.approx(20.0, abs=1e-4)
    table = studies.duration_table(scores)
    assert table["1-2s"]["regions"] == 1 and math.isnan(table["4-8s"]["usdr_mean"])


def test_oracle_irm_is_a_ceiling_and_mixture_a_floor() -> None:
    rng = np.random.default_rng(0)
    n = SR
    t = np.arange(n) / SR
    vocals = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (2, 1)).astype(np.float32)
    rest = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    mix = vocals + rest
    for power in (1.0, 2.0):
        est = studies.oracle_irm(mix, {"vocals": vocals, "rest": rest}, power=power)
        np.testing.assert_allclose(est["vocals"] + est["rest"], mix, atol=1e-4)  # masks sum to one
    est = studies.oracle_irm(mix, {"vocals": vocals})  # the remainder becomes the other source
    floor = metrics.usdr(vocals, studies.mixture_baseline(mix, ["vocals"])["vocals"])
    assert metrics.usdr(vocals, est["vocals"]) > floor + 10


def test_score_track_and_summary_handle_perfect_and_silent() -> None:
    ref = _bursts([(0.2, 1.6)], seconds=2.0)
    row = track_report({"vocals": ref}, {"vocals": ref.copy()}, SR)
    assert row["stems"]["vocals"]["csdr"] == math.inf
    assert len(row["vocal_regions"]) == 1
    summary = summarize({8.0: [row]}, ["vocals"], overlap=0.0)
    text = summary_markdown(summary, "t")
    assert "| 8 s | vocals |" in text and "1-2s" in text


def test_perfect_and_missing_scores_read_the_same_in_json_and_markdown(tmp_path: Path) -> None:
    # instrumental perfect in most frames (+inf cSDR), one track whose vocals have no cSDR data (NaN)
    rows = [
        {
            "track": "A",
            "stems": {"vocals": {"usdr": 3.0, "csdr": 2.0}, "instrumental": {"usdr": 20.0, "csdr": math.inf}},
        },
        {
            "track": "B",
            "stems": {
                "vocals": {"usdr": 5.0, "csdr": math.nan},
                "instrumental": {"usdr": 30.0, "csdr": math.inf},
            },
        },
    ]
    summary = summarize({0.0: rows}, ["vocals", "instrumental"], overlap=None)
    write_json(tmp_path / "s.json", summary)
    stems = json.loads((tmp_path / "s.json").read_text())["runs"][0]["stems"]
    assert stems["instrumental"]["csdr_median"] == "inf" and stems["instrumental"]["csdr_std"] is None
    assert (stems["vocals"]["tracks"], stems["vocals"]["csdr_tracks"]) == (2, 1)
    md = summary_markdown(summary, "t")
    assert "| – | instrumental | 25.00 | inf | 25.00 | inf | 2 |" in md
    assert "| – | vocals | 4.00 | 2.00 | 4.00 | 2.00 | 2 (cSDR 1) |" in md


def _leak_row(track: str, est: float, mix: float, seconds: float, instrumental: bool) -> dict:
    leak = {
        "silent_seconds": seconds, "track_seconds": 10.0, "instrumental": instrumental,
        "leakage_db": 10 * math.log10(est / mix) if seconds else math.nan,
        "estimate_energy": est, "mixture_energy": mix, "windows": int(seconds), "windows_above": 1,
    }  # fmt: skip
    return {"track": track, "stems": {"vocals": {"usdr": 3.0, "csdr": 2.0}}, "vocal_leakage": leak}


def test_summary_reports_vocal_leakage_only_where_references_are_silent() -> None:
    rows = [_leak_row("A", 1.0, 100.0, 10.0, True), _leak_row("B", 1.0, 1.0, 4.0, False)]
    summary = summarize({8.0: rows}, ["vocals"], overlap=0.0)
    leak = summary["runs"][0]["vocal_leakage"]
    assert leak["silent"]["leakage_db"] == pytest.approx(10 * math.log10(2 / 101))
    assert leak["instrumental"]["leakage_db"] == pytest.approx(-20.0)
    md = summary_markdown(summary, "t")
    assert "| 8 s | 2 with silence | 14.0 | -17.03 | -10.00 | 0.00 | 2 / 14 (14.3 %) |" in md
    assert "| 8 s | 1 instrumental | 10.0 | -20.00 | -20.00 | -20.00 | 1 / 10 (10.0 %) |" in md
    # no silent reference anywhere: no leakage in the summary, and the same tables as without the field
    dense = [_leak_row("C", 1.0, 1.0, 0.0, False)]
    bare = [{k: v for k, v in r.items() if k != "vocal_leakage"} for r in dense]
    s_dense, s_bare = summarize({8.0: dense}, ["vocals"], 0.0), summarize({8.0: bare}, ["vocals"], 0.0)
    assert "vocal_leakage" not in s_dense["runs"][0] and s_dense == s_bare
    assert summary_markdown(s_dense, "t") == summary_markdown(s_bare, "t")
