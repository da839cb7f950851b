"""Vocal leakage where the reference has no voice (bsmamba2.evaluate.leakage): exact values on tiny signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bsmamba2.evaluate import leakage

SR = 1000  # a small rate keeps the arrays tiny; the metric only counts samples


def _track(seconds: float = 5.0, phrase: tuple[float, float] = (1.0, 2.5)) -> tuple[np.ndarray, ...]:
    """(mixture, vocals, phrases): noise accompaniment, a vocal phrase, exact zeros around it."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    rest = 0.1 * rng.standard_normal((2, n))
    vocals = np.zeros((2, n))
    s, e = round(phrase[0] * SR), round(phrase[1] * SR)
    vocals[:, s:e] = 0.3 * rng.standard_normal((2, e - s))
    return rest + vocals, vocals, [(s, e)]


def test_leak_db_is_the_energy_ratio_with_a_floor() -> None:
    assert leakage.leak_db(2.0, 2.0) == 0.0
    assert leakage.leak_db(1.0, 100.0) == pytest.approx(-20.0)
    assert leakage.leak_db(0.0, 1.0) == leakage.LEAK_FLOOR_DB
    assert leakage.leak_db(1e-20, 1.0) == leakage.LEAK_FLOOR_DB
    assert math.isnan(leakage.leak_db(0.0, 0.0)) and leakage.leak_db(1.0, 0.0) == math.inf


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.05])
def test_a_scaled_mixture_leaks_by_its_scale(scale: float) -> None:
    mix, vocals, phrases = _track()
    silent = leakage.silence_from_phrases(vocals, phrases)
    assert np.count_nonzero(silent) == 3500  # 1 s before the phrase, 2.5 s after
    est = scale * mix
    est[:, phrases[0][0] : phrases[0][1]] = 0.9 * mix[:, phrases[0][0] : phrases[0][1]]  # inside: not counted
    leak = leakage.vocal_leakage(mix, est, vocals, silent, SR)
    assert leak.db == pytest.approx(20 * math.log10(scale), abs=1e-9)
    assert leak.reference_db == leakage.LEAK_FLOOR_DB  # exact zeros: a perfect estimate would score the floor
    # runs of 1 s and 2.5 s: one and two whole 1 s windows
    assert leak.windows == 3 and leak.windows_above == (3 if scale > 0.1 else 0)
    assert not leak.instrumental and leak.to_dict()["silent_seconds"] == 3.5


def test_zero_estimate_gives_the_floor_and_windows_count_separately() -> None:
    mix, vocals, phrases = _track()
    silent = leakage.silence_from_phrases(vocals, phrases)
    assert leakage.vocal_leakage(mix, np.zeros_like(mix), vocals, silent, SR).db == leakage.LEAK_FLOOR_DB
    est = np.zeros_like(mix)
    est[:, :1000] = mix[:, :1000]  # the voice "heard" only in the run before the phrase
    leak = leakage.vocal_leakage(mix, est, vocals, silent, SR)
    assert (leak.windows, leak.windows_above) == (3, 1)
    expected = np.sum(mix[:, :1000] ** 2) / np.sum(mix[:, silent] ** 2)
    assert leak.db == pytest.approx(10 * math.log10(expected), abs=1e-9)


def test_a_track_without_silence_is_nan_with_a_count() -> None:
    mix, vocals, _ = _track()
    silent = leakage.silence_from_phrases(vocals, [(0, mix.shape[-1])])
    leak = leakage.vocal_leakage(mix, mix, vocals, silent, SR)
    assert leak.silent_samples == 0 and math.isnan(leak.db) and math.isnan(leak.reference_db)
    assert leak.windows == 0
    row = leak.to_dict()
    assert leakage.leakage_summary([row]) is None  # nothing to report
    other = leakage.vocal_leakage(
        mix, 0.1 * mix, vocals, leakage.silence_from_phrases(vocals, [(1000, 2500)]), SR
    )
    agg = leakage.leakage_summary([row, other.to_dict()])
    assert agg is not None and "instrumental" not in agg
    assert (agg["silent"]["tracks"], agg["silent"]["tracks_without"]) == (1, 1)
    assert agg["silent"]["leakage_db"] == pytest.approx(-20.0)


def test_instrumental_songs_are_silent_throughout_and_aggregated_apart() -> None:
    mix, vocals, phrases = _track()
    instr = mix - vocals
    zero = np.zeros_like(mix)
    whole = leakage.vocal_leakage(instr, instr, zero, leakage.silence_from_phrases(zero, []), SR)
    assert whole.instrumental and whole.silent_samples == mix.shape[-1] and whole.windows == 5
    sparse = leakage.vocal_leakage(mix, 0.01 * mix, vocals, leakage.silence_from_phrases(vocals, phrases), SR)
    rows = [whole.to_dict(), sparse.to_dict()]
    agg = leakage.leakage_summary(rows)
    assert agg is not None
    assert agg["instrumental"]["tracks"] == 1 and agg["instrumental"]["leakage_db"] == 0.0
    # energy-weighted over both tracks, against the plain mean and the worst of the per-track dB
    pooled = (whole.estimate_energy + sparse.estimate_energy) / (whole.mixture_energy + sparse.mixture_energy)
    assert agg["silent"]["leakage_db"] == pytest.approx(10 * math.log10(pooled))
    assert agg["silent"]["leakage_mean_db"] == pytest.approx((0.0 - 40.0) / 2)
    assert agg["silent"]["leakage_max_db"] == 0.0
    assert (agg["silent"]["windows"], agg["silent"]["windows_above"]) == (8, 5)
    assert agg["silent"]["windows_above_share"] == pytest.approx(5 / 8)


def test_the_threshold_detector_for_folders_without_meta() -> None:
    sr = 44100
    n = 4 * sr
    rng = np.random.default_rng(1)
    vocals = 10 ** (-80 / 20) * rng.standard_normal((2, n))  # a -80 dBFS noise floor: silent
    vocals[:, sr : 3 * sr] = 0.3 * rng.standard_normal((2, 2 * sr))  # a phrase from 1 s to 3 s
    vocals[:, 2 * sr : 2 * sr + 4410] = 0.0  # a 0.1 s stop inside it: too short to count
    silent = leakage.silence_from_threshold(vocals, sr)
    runs = leakage.silent_runs(silent)
    assert len(runs) == 2
    # the runs end / start within one frame of the phrase edges (the frame is centred on each hop)
    assert runs[0][0] == 0 and abs(runs[0][1] - sr) <= leakage.SILENCE_FRAME
    assert abs(runs[1][0] - 3 * sr) <= leakage.SILENCE_FRAME and runs[1][1] == n
    mix = vocals + 0.1 * rng.standard_normal((2, n))
    leak = leakage.vocal_leakage(mix, vocals, vocals, silent, sr, silence_from="threshold")
    # what the threshold let in is reported: the reference's own energy there
    assert leak.reference_db == pytest.approx(leak.db) and -65 < leak.reference_db < -55
    assert leakage.silence_mask(vocals, None, sr).tolist() == silent.tolist()
    assert not leakage.silence_mask(vocals, [(0, n)], sr).any()  # meta.json phrases win


def test_shapes_must_agree() -> None:
    mix, vocals, phrases = _track()
    silent = leakage.silence_from_phrases(vocals, phrases)
    with pytest.raises(ValueError, match="mask"):
        leakage.vocal_leakage(mix, mix[:, :-1], vocals, silent, SR)
    assert leakage.silent_runs(np.array([True, True, False, True])) == [(0, 2), (3, 4)]
