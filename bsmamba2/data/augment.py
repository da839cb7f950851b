"""Per-stem augmentations for random-mix training: what to do to one stem, drawn from a NumPy Generator.

The sampler applies the draw in the same pass that reads the stem (gain and polarity as one scale factor,
channel swap as a view), so no augmentation costs an extra copy of the audio.

The official recipe (OFFICIAL_SPEC §6) uses only a random gain U(0.5, 1.5) and silent stems (p = 0.1, vocals
included); channel swap and polarity flip are common extras, off by default. The random draws happen in a
fixed order whatever is enabled, so switching one augmentation off does not reshuffle the others.

A long room (:func:`draw_reverb`, :func:`reverberate`; off by default, not official) puts an accompaniment
stem in a diffuse hall: exponentially decaying noise, RT60 from 1.5 to 6 s by default, convolved over the
segment. Sustained, reverberant accompaniment is where a model trained on drier synthetic songs hears a voice
(RESULTS.md §4.0j). A saturator (:func:`draw_drive`, :func:`saturate`; off by default, not official) gives an
accompaniment stem the harmonics of a distorted guitar or synth.
"""

from __future__ import annotations

import numpy as np


def draw(
    rng: np.random.Generator,
    gain_range: tuple[float, float] | None,
    p_silent: float,
    p_channel_swap: float,
    p_polarity_flip: float,
) -> tuple[bool, float, bool, bool]:
    """Draw one stem's augmentation: (silent, gain, swap channels, flip polarity)."""
    u = rng.random(4)
    silent = bool(u[0] < p_silent)
    gain = 1.0 if gain_range is None else float(gain_range[0] + (gain_range[1] - gain_range[0]) * u[1])
    return silent, gain, bool(u[2] < p_channel_swap), bool(u[3] < p_polarity_flip)


def draw_reverb(
    rng: np.random.Generator, p_reverb: float, rt60_range: tuple[float, float]
) -> tuple[float, float, int] | None:
    """One stem's long room: (RT60 in seconds, wet gain U(0.3, 1), impulse-response seed), or None. Draws
    nothing from ``rng`` when ``p_reverb`` is 0, so items without it are those of a recipe that never had it."""
    if p_reverb <= 0.0 or not rng.random() < p_reverb:
        return None
    rt60 = float(rng.uniform(*rt60_range))
    return rt60, float(rng.uniform(0.3, 1.0)), int(rng.integers(2**31))


def draw_drive(rng: np.random.Generator, p_drive: float, drive_db: tuple[float, float]) -> float | None:
    """One stem's saturator gain in dB, or None. Draws nothing from ``rng`` when ``p_drive`` is 0."""
    if p_drive <= 0.0 or not rng.random() < p_drive:
        return None
    return float(rng.uniform(*drive_db))


def saturate(x: np.ndarray, drive_db: float) -> None:
    """x (N, C) float32 in place: ``tanh`` of x with its peak raised to ``drive_db`` dB, then scaled back to
    x's own RMS (so the stem's level, and the gain augmentation before it, are kept)."""
    peak = float(np.abs(x).max())
    if peak == 0.0:
        return
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    np.multiply(x, np.float32(10 ** (drive_db / 20) / peak), out=x)
    np.tanh(x, out=x)
    x *= np.float32(rms / max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-20))


def room_ir(rt60: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """(L, channels) float32 impulse response: Gaussian noise under a decay of 60 dB in ``rt60`` seconds, each
    channel its own noise (a wide, diffuse room) scaled to unit energy; L = rt60 seconds."""
    n = max(1, int(rt60 * sample_rate))
    decay = np.exp(-np.log(1000.0) * np.arange(n) / (rt60 * sample_rate))
    ir = np.random.default_rng(seed).standard_normal((n, channels)) * decay[:, None]
    return (ir / np.sqrt((ir**2).sum(0, keepdims=True))).astype(np.float32)


def reverberate(x: np.ndarray, rt60: float, wet: float, sample_rate: int, seed: int) -> None:
    """x (N, C) float32 in place: ``(1 - wet / 2) x + wet (x * room_ir)``, the convolution cut at N samples
    (what rings past the segment is dropped; what rang into it from before is not there)."""
    n = x.shape[0]
    ir = room_ir(rt60, sample_rate, x.shape[1], seed)
    size = _fast_length(n + len(ir) - 1)  # >= N + L - 1: a linear convolution
    tail = np.fft.irfft(np.fft.rfft(x, size, axis=0) * np.fft.rfft(ir, size, axis=0), size, axis=0)[:n]
    x *= np.float32(1.0 - wet / 2.0)
    x += (wet * tail).astype(np.float32)


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: a length NumPy's FFT does quickly."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            k = p35 << max(0, (-(-n // p35) - 1).bit_length())  # p35 times a power of two, >= n
            best = min(best, k)
            p35 *= 3
        p5 *= 5
    return best
