"""Per-stem augmentations for random-mix training: what to do to one stem, drawn from a NumPy Generator.

The sampler applies the draw in the same pass that reads the stem (gain and polarity as one scale factor,
channel swap as a view), so no augmentation costs an extra copy of the audio.

The official recipe (OFFICIAL_SPEC §6) uses only a random gain U(0.5, 1.5) and silent stems (p = 0.1, vocals
included); channel swap and polarity flip are common extras, off by default. The random draws happen in a
fixed order whatever is enabled, so switching one augmentation off does not reshuffle the others.

A random equaliser (:func:`draw_eq`, :func:`equalise`; off by default, not official) reshapes a stem's
spectrum: a gain in dB at each octave centre from 31.25 Hz to 16 kHz, drawn from U(-eq_db, eq_db),
interpolated in log frequency and held flat beyond the ends, applied through one real FFT of the segment.
It gives the model accompaniment whose balance is not the corpus's, e.g. sub-bass-heavy mixes with a quiet,
sparse mid band, where a model trained on synthetic songs takes the mids for the voice.
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


EQ_CENTRES_HZ = tuple(31.25 * 2.0**k for k in range(10))  # 31.25 Hz ... 16 kHz, one per octave


def draw_eq(rng: np.random.Generator, p_eq: float, eq_db: float) -> np.ndarray | None:
    """One stem's random equaliser: gains in dB at :data:`EQ_CENTRES_HZ`, or None (no EQ). Draws nothing from
    ``rng`` when ``p_eq`` is 0, so items without it are those of a recipe that never had it."""
    if p_eq <= 0.0 or not rng.random() < p_eq:
        return None
    return rng.uniform(-eq_db, eq_db, len(EQ_CENTRES_HZ))


def eq_curve(gains_db: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    """Linear amplitude gain at each of the ``n // 2 + 1`` rfft bins of an n-sample segment: ``gains_db``
    interpolated in log2 frequency between the octave centres, flat below the first and above the last."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    octave = np.log2(np.maximum(freqs, 1e-3) / EQ_CENTRES_HZ[0])
    db = np.interp(octave, np.arange(len(EQ_CENTRES_HZ)), gains_db)
    return (10.0 ** (db / 20.0)).astype(np.float32)


def equalise(x: np.ndarray, gains_db: np.ndarray, sample_rate: int) -> None:
    """Apply :func:`eq_curve` to x (N, C) float32 in place, every channel alike."""
    n = x.shape[0]
    spectrum = np.fft.rfft(x, axis=0)
    spectrum *= eq_curve(gains_db, n, sample_rate)[:, None]
    x[...] = np.fft.irfft(spectrum, n=n, axis=0)
