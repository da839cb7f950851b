"""Spectrogram figures (PNG) for the demo and the paper's Fig. 2 comparison.

Only ``save_spectrograms`` needs matplotlib (the ``demo`` extra: ``pip install 'bsmamba2[demo]'``); it is
imported when a figure is drawn, never at import time. The spectrogram maths is plain NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bsmamba2.atomic import atomic_write
from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.errors import UserError


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), (n_mels, n_fft // 2 + 1), each peaking at 1."""
    fmax = sample_rate / 2 if fmax is None else fmax

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))  # (M+2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    up = (bins[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - bins[None]) / np.maximum(hi - mid, 1e-9)
    return np.maximum(0.0, np.minimum(up, down))  # (M, F)


def spectrogram_db(
    x: np.ndarray,
    sample_rate: int = MODEL_SAMPLE_RATE,
    *,
    n_fft: int = 2048,
    hop: int = 512,
    n_mels: int | None = 128,
) -> np.ndarray:
    """Power spectrogram in dB (not normalised), (bins, frames): mel bins if ``n_mels`` else linear bins.

    x: (C, N) or (N,) waveform; channels are averaged first. A Hann window, frames every ``hop`` samples.
    """
    x = np.asarray(x, dtype=np.float64)
    mono = x.mean(axis=0) if x.ndim == 2 else x  # (N,)
    if mono.shape[-1] < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.shape[-1]))
    n_frames = 1 + (mono.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n_frames)[:, None]  # (T, n_fft)
    spec = np.abs(np.fft.rfft(mono[idx] * np.hanning(n_fft)[None], axis=-1)) ** 2  # (T, F)
    if n_mels:
        spec = spec @ mel_filterbank(n_mels, n_fft, sample_rate).T  # (T, M)
    return 10.0 * np.log10(spec.T + 1e-12)  # (bins, T)


def save_spectrograms(
    path: str | os.PathLike[str],
    signals: Mapping[str, np.ndarray],
    sample_rate: int = MODEL_SAMPLE_RATE,
    *,
    title: str | None = None,
    regions: Sequence[tuple[float, float]] = (),
    mel: bool = True,
    dynamic_range: float = 80.0,
) -> Path:
    """Stack one spectrogram per signal ({label: (C, N) or (N,)}) in a PNG, on one shared dB scale.

    The colour scale runs from the loudest bin of all panels down ``dynamic_range`` dB, so a quieter estimate
    looks quieter. ``regions``: (start, end) seconds drawn as brackets on every panel (e.g. vocal phrases).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("spectrogram plots need matplotlib: pip install 'bsmamba2[demo]'") from None
    if not signals:
        raise ValueError("no signals to plot")
    specs = {k: spectrogram_db(v, sample_rate, n_mels=128 if mel else None) for k, v in signals.items()}
    vmax = max(float(s.max()) for s in specs.values())
    hop = 512
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.2 * len(specs)), sharex=True, squeeze=False)
    for ax, (label, s) in zip(axes[:, 0], specs.items(), strict=True):
        dur = (s.shape[1] - 1) * hop / sample_rate
        extent = (0.0, dur, 0.0, float(s.shape[0]) if mel else sample_rate / 2000)
        im = ax.imshow(
            s,
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap="magma",
            vmin=vmax - dynamic_range,
            vmax=vmax,
        )
        for a, b in regions:
            ax.axvspan(a, b, ymin=0.97, ymax=1.0, color="cyan", alpha=0.9, lw=0)
        ax.set_xlim(0.0, dur)  # regions past the last frame must not widen the axis
        ax.set_ylabel("mel bin" if mel else "kHz")
        ax.set_title(label, loc="left", fontsize=10)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="dB", fraction=0.02, pad=0.01)
    out = Path(path)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out
