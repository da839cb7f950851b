"""Synthesis primitives: string pitch, the voice's pitch and formants, STFT round trip, exact quantisation."""

from __future__ import annotations

import numpy as np
import pytest

from bsmamba2.data.synth import instruments, render, voice
from bsmamba2.data.synth.score import Syllable

SR = 44100


def f0_autocorr(x: np.ndarray, lo: float = 60.0, hi: float = 1000.0) -> float:
    """Fundamental frequency by autocorrelation with parabolic peak interpolation."""
    x = x - x.mean()
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
    a, b = int(SR / hi), int(SR / lo)
    k = a + int(np.argmax(r[a:b]))
    y0, y1, y2 = r[k - 1], r[k], r[k + 1]
    return SR / (k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2))


@pytest.mark.parametrize("f0", [98.0, 196.0, 440.0, 659.3])
def test_karplus_strong_is_in_tune(f0: float) -> None:
    y = instruments.karplus_strong(f0, SR // 2, SR, np.random.default_rng(0), brightness=0.8, decay=2.0)
    assert y.shape == (SR // 2,) and np.isfinite(y).all()
    assert abs(f0_autocorr(y[2000:12000]) / f0 - 1) < 0.003
    assert np.abs(y[-2000:]).max() < np.abs(y[:2000]).max()  # it decays


def test_voice_pitch_length_and_formants() -> None:
    singer = dict(voice.SINGERS[2], vibrato_cents=0.0, jitter=0.0, vibrato_rate=5.5)

    def sing(vowel: str, midi: float = 57.0) -> np.ndarray:
        syl = [Syllable(t=0.05, dur=1.3, midi=midi, onset="", vowel=vowel, coda="")]
        return voice.render_phrase(syl, 1.5, singer, SR, np.random.default_rng(1))

    a = sing("a")
    assert a.shape == (int(1.5 * SR),) and a[0] == 0.0 and a[-1] == 0.0
    assert abs(f0_autocorr(a[SR // 2 : SR]) / 220.0 - 1) < 0.03
    # /i/ has a low F1 and a high F2: less energy at 600-900 Hz and more at 2-3 kHz than /a/
    i = sing("i")

    def band(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x[SR // 4 : SR])) ** 2
        f = np.fft.rfftfreq(len(x[SR // 4 : SR]), 1 / SR)
        return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())

    assert band(i, 600, 900) < band(a, 600, 900)
    assert band(i, 2000, 3000) > band(a, 2000, 3000)


def test_stft_round_trip() -> None:
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    np.testing.assert_allclose(voice.istft(voice.stft(x), len(x)), x, atol=1e-5)


def test_quantised_sums_are_exact_in_any_order() -> None:
    rng = np.random.default_rng(0)
    stems = [render.quantise(rng.uniform(-0.99, 0.99, 100000).astype(np.float32)) for _ in range(4)]
    forward = ((stems[0] + stems[1]) + stems[2]) + stems[3]
    backward = ((stems[3] + stems[2]) + stems[1]) + stems[0]
    pairs = (stems[0] + stems[2]) + (stems[1] + stems[3])
    exact = np.sum(np.stack(stems).astype(np.float64), axis=0)
    np.testing.assert_array_equal(forward, backward)
    np.testing.assert_array_equal(forward, pairs)
    np.testing.assert_array_equal(forward.astype(np.float64), exact)
