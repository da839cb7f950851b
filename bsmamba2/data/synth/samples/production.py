"""Mixing-desk processing in numpy/scipy: filters, EQ, a bus compressor, synthetic-room reverb, exciter.

Every stem gets a random high-pass and low-pass (so bandwidth says nothing about which stem is which: Kokoro
has little energy above ~12 kHz, many instruments have plenty), a few EQ bands and, for some, bus compression.
All filters are IIR second-order sections (scipy.signal.sosfilt), reverbs are FFT convolutions.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from bsmamba2 import audio
from bsmamba2.data.synth.render import impulse_response


def butter(x: np.ndarray, kind: str, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth ``kind`` ("lowpass" | "highpass") along the last axis; a cutoff past 0.45 sr is a no-op."""
    if kind == "lowpass" and cutoff >= 0.45 * sr:
        return x
    sos = signal.butter(order, cutoff, btype=kind, fs=sr, output="sos")
    return signal.sosfilt(sos, x, axis=-1).astype(np.float32)


def _biquad(kind: str, f: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking / low-shelf / high-shelf biquad as one SOS row (1, 6)."""
    a_ = 10 ** (gain_db / 40)
    w = 2 * np.pi * min(f, 0.45 * sr) / sr
    cw, alpha = np.cos(w), np.sin(w) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a_, -2 * cw, 1 - alpha * a_]
        a = [1 + alpha / a_, -2 * cw, 1 - alpha / a_]
    else:
        s = 1 if kind == "low" else -1  # shelves: the same formula with the sign of cos flipped
        sq = 2 * np.sqrt(a_) * alpha
        b = [a_ * ((a_ + 1) - s * (a_ - 1) * cw + sq), s * 2 * a_ * ((a_ - 1) - s * (a_ + 1) * cw),
             a_ * ((a_ + 1) - s * (a_ - 1) * cw - sq)]  # fmt: skip
        a = [(a_ + 1) + s * (a_ - 1) * cw + sq, -s * 2 * ((a_ - 1) + s * (a_ + 1) * cw),
             (a_ + 1) + s * (a_ - 1) * cw - sq]  # fmt: skip
    return np.array([[*(np.array(b) / a[0]), 1.0, a[1] / a[0], a[2] / a[0]]])


def random_eq(
    x: np.ndarray, sr: int, rng: np.random.Generator, bands: int = 3, max_db: float = 6.0
) -> np.ndarray:
    """A low shelf, a high shelf and ``bands - 2`` peaking bands of random frequency and gain."""
    rows = [_biquad("low", float(rng.uniform(80, 300)), float(rng.uniform(-max_db, max_db)), 0.7, sr),
            _biquad("high", float(rng.uniform(3000, 10000)), float(rng.uniform(-max_db, max_db)), 0.7, sr)]  # fmt: skip
    for _ in range(max(0, bands - 2)):
        f = float(np.exp(rng.uniform(np.log(150), np.log(8000))))
        rows.append(_biquad("peak", f, float(rng.uniform(-max_db, max_db)), float(rng.uniform(0.5, 2.5)), sr))
    return signal.sosfilt(np.concatenate(rows), x, axis=-1).astype(np.float32)


def band_limit(x: np.ndarray, sr: int, rng: np.random.Generator, hp: tuple[float, float] = (20, 180),
               lp: tuple[float, float] = (5000, 22000), p_lp: float = 0.75, p_ceiling: float = 0.0
               ) -> tuple[np.ndarray, dict[str, float]]:  # fmt: skip
    """A random high-pass (log-uniform in ``hp`` Hz) and, with probability ``p_lp``, a random low-pass (log-uniform
    in ``lp``; 12-48 dB/octave); then, with probability ``p_ceiling``, a brick-wall "ceiling" at 9-12 kHz like
    the one of a voice rendered at 24 kHz (so that an empty top octave is no sign of the vocals). Returns the signal and
    the cutoffs used (0 = none)."""
    order = int(rng.choice([1, 2]))
    f_hp = float(np.exp(rng.uniform(*np.log(hp))))
    y = butter(x, "highpass", f_hp, sr, order)
    f_lp = float(np.exp(rng.uniform(*np.log(lp)))) if rng.random() < p_lp else 0.0
    if f_lp:
        y = butter(y, "lowpass", f_lp, sr, int(rng.choice([2, 4, 8])))
    ceiling = float(rng.choice([9000, 10000, 11025, 12000])) if rng.random() < p_ceiling else 0.0
    if ceiling:
        y = brickwall(y, sr, int(2 * ceiling))
    return y, {"highpass_hz": round(f_hp, 1), "lowpass_hz": round(f_lp, 1), "ceiling_hz": round(ceiling, 1)}


def brickwall(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Nothing left above rate / 2: a round trip through ``rate`` with soxr's steep anti-alias filter, (C, N)."""
    y = audio.resample(audio.resample(np.ascontiguousarray(x, np.float32), sr, rate), rate, sr)
    out = np.zeros_like(x, dtype=np.float32)
    m = min(x.shape[-1], y.shape[-1])
    out[..., :m] = y[..., :m]
    return out


def compressor_gain(x: np.ndarray, sr: int, threshold_db: float, ratio: float, attack: float = 0.01,
                    release: float = 0.15, block: int = 256) -> np.ndarray:  # fmt: skip
    """Gain curve (N,) of a feed-forward RMS compressor on a (C, N) bus, channels linked. The level is
    measured per ``block`` samples; the attack/release follower runs per block, the gain is interpolated."""
    n = x.shape[-1]
    nb = -(-n // block)
    pad = np.zeros((x.shape[0], nb * block), np.float32)
    pad[:, :n] = x
    lvl = 10 * np.log10(np.mean(pad.reshape(x.shape[0], nb, block) ** 2, axis=(0, 2)) + 1e-12)
    want = -np.maximum(lvl - threshold_db, 0.0) * (1 - 1 / ratio)  # dB of gain reduction wanted per block
    ca, cr = np.exp(-block / (attack * sr)), np.exp(-block / (release * sr))
    g = np.zeros(nb)
    prev = 0.0
    for i, w in enumerate(want):  # one step per block: ~170 per second of audio
        c = ca if w < prev else cr
        prev = c * prev + (1 - c) * w
        g[i] = prev
    return (10 ** (np.interp(np.arange(n), np.arange(nb) * block + block / 2, g) / 20)).astype(np.float32)


def compress(x: np.ndarray, sr: int, threshold_db: float, ratio: float, attack: float = 0.01,
             release: float = 0.15) -> np.ndarray:  # fmt: skip
    """``x`` (C, N) through :func:`compressor_gain` (no makeup gain)."""
    return (x * compressor_gain(x, sr, threshold_db, ratio, attack, release)).astype(np.float32)


def exciter(x: np.ndarray, sr: int, amount: float) -> np.ndarray:
    """Add "air": harmonics above 8 kHz generated by saturating the 3 kHz+ band (fills in a dull top)."""
    hi = butter(x, "highpass", 3000.0, sr, 2)
    k = 4.0 / (np.abs(hi).max() + 1e-9)
    air = butter(np.tanh(k * hi) / k, "highpass", 8000.0, sr, 2)
    return (x + amount * air).astype(np.float32)


class Reverb:
    """A synthetic stereo room (decaying decorrelated noise + early reflections, see render.impulse_response):
    mono send in, stereo wet out, by FFT convolution (scipy, deterministic)."""

    def __init__(self, sr: int, rt60: float, rng: np.random.Generator, predelay: float = 0.01) -> None:
        self.ir = impulse_response(sr, rt60, rng, predelay=predelay)  # (2, L)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(2, N) or (N,) dry -> (2, N) wet (tail cut at N)."""
        mono = x.mean(axis=0) if x.ndim == 2 else x
        n = mono.shape[-1]
        wet = signal.fftconvolve(mono[None, :], self.ir, axes=-1)[:, :n]
        return wet.astype(np.float32)
