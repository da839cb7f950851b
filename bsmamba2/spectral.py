"""STFT front end and its inverse, as in the official code (OFFICIAL_SPEC §4).

n_fft 2048, hop 441 (10 ms at 44.1 kHz), periodic Hann window of length n_fft, centred frames with reflect
padding, no normalisation. A signal of N samples gives 1 + N // hop frames. The inverse takes the target
length, so the round trip returns exactly N samples for any N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_windows: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def hann_window(n_fft: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Periodic Hann window, cached per (size, device, dtype)."""
    key = (n_fft, device, dtype)
    w = _windows.get(key)
    if w is None:
        # Made outside inference mode, so a window first built under torch.inference_mode() can still be
        # saved for backward by later training code.
        with torch.inference_mode(False):
            w = torch.hann_window(n_fft, periodic=True, device=device, dtype=dtype)
        _windows[key] = w
    return w


def min_length(n_fft: int) -> int:
    """Shortest signal the centred reflect-padded STFT accepts (reflect padding needs N > n_fft // 2)."""
    return n_fft // 2 + 1


def stft(wave: Tensor, n_fft: int = 2048, hop_length: int = 441) -> Tensor:
    """wave (..., N) real -> complex spectrogram (..., n_fft // 2 + 1, 1 + N // hop_length).

    Signals shorter than ``min_length(n_fft)`` must be zero-padded by the caller (see BandSplitSeparator).
    """
    shape = wave.shape
    x = wave.reshape(-1, shape[-1])
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=hann_window(n_fft, x.device, x.dtype),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (prod(...), F, T)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: Tensor, n_fft: int = 2048, hop_length: int = 441, length: int | None = None) -> Tensor:
    """complex (..., F, T) -> real (..., length). ``length`` defaults to hop·(T−1), the official output size."""
    shape = spec.shape
    s = spec.reshape(-1, *shape[-2:])
    real_dtype = torch.float64 if s.dtype == torch.complex128 else torch.float32
    if s.dtype not in (torch.complex64, torch.complex128):
        s = s.to(torch.complex64)
    wave = torch.istft(
        s,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=hann_window(n_fft, s.device, real_dtype),
        center=True,
        normalized=False,
        onesided=True,
        length=length,
    )  # (prod(...), N)
    return wave.reshape(*shape[:-2], wave.shape[-1])


def pad_to_min_length(wave: Tensor, n_fft: int) -> tuple[Tensor, int]:
    """Zero-pad (..., N) on the right so the STFT accepts it; returns (padded, original N)."""
    n = wave.shape[-1]
    need = min_length(n_fft)
    if n >= need:
        return wave, n
    return F.pad(wave, (0, need - n)), n
