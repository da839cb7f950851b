"""Causal STFT framing for the causal (streamable) model: frame t ends at sample (t + 1)·hop − 1.

The default front end (``bsmamba2.spectral``, the official one) centres frames with reflect padding, so frame t
reads n_fft / 2 samples of the future and the first frames read the signal mirrored. Here instead the signal is
left-padded with P = n_fft − hop zeros and framed without centring: frame t covers samples
[t·hop − P, t·hop + hop), so it depends on samples ≤ its end only. Same periodic Hann window, no normalisation.

The inverse is overlap-add of the windowed frames divided by the summed squared window. Every sample of the
signal is covered by the full, steady set of frames, so that sum is periodic in hop (``envelope``) and a stream
can divide by it frame by frame. The offline functions here and the streaming engine (``bsmamba2.streaming``)
share ``analyse`` and ``synthesise``, so both run the same arithmetic.

Axis legend: f frequency bins, t frames, w samples of a frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bsmamba2.spectral import hann_window


def left_pad(n_fft: int, hop: int) -> int:
    """P = n_fft − hop zeros before the signal: frame 0 then ends at sample hop − 1."""
    return n_fft - hop


def num_frames(n: int, n_fft: int, hop: int) -> int:
    """Frames that cover a signal of n ≥ 1 samples: every frame starting at or before sample n − 1."""
    return (n - 1 + left_pad(n_fft, hop)) // hop + 1


def envelope(n_fft: int, hop: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """(hop,) Σ_m w²[j + m·hop]: the squared-window sum at a sample j (mod hop) after a frame start."""
    w2 = hann_window(n_fft, device, dtype) ** 2
    return F.pad(w2, (0, (-n_fft) % hop)).reshape(-1, hop).sum(0)


def analyse(frames_signal: Tensor, n_fft: int, hop: int) -> Tensor:
    """(..., L) real, whose sample 0 starts a frame -> complex (..., f, (L − n_fft) // hop + 1).

    Windowed real FFT of every complete frame; float64 stays float64, anything else runs in float32."""
    x = frames_signal if frames_signal.dtype == torch.float64 else frames_signal.float()
    frames = x.unfold(-1, n_fft, hop) * hann_window(n_fft, x.device, x.dtype)  # (..., t, w)
    return rearrange(torch.fft.rfft(frames, dim=-1), "... t f -> ... f t")


def synthesise(spec: Tensor, n_fft: int, hop: int) -> Tensor:
    """complex (..., f, t) -> real (..., (t − 1)·hop + n_fft): the windowed inverse FFTs, overlap-added.

    Not yet divided by the window sum (``envelope``): a caller that has every frame over a sample does that."""
    frames = torch.fft.irfft(spec.transpose(-1, -2), n=n_fft, dim=-1)  # (..., t, w)
    real = frames.dtype
    frames = frames * hann_window(n_fft, spec.device, real)
    lead, t = frames.shape[:-2], frames.shape[-2]
    out = F.fold(
        rearrange(frames.reshape(-1, t, n_fft), "n t w -> n w t"),
        output_size=(1, (t - 1) * hop + n_fft),
        kernel_size=(1, n_fft),
        stride=(1, hop),
    )  # (n, 1, 1, L): overlap-add
    return out.reshape(*lead, -1)


def causal_stft(wave: Tensor, n_fft: int = 2048, hop_length: int = 441) -> Tensor:
    """wave (..., N) real, N ≥ 1 -> complex (..., n_fft // 2 + 1, num_frames(N)): frame t ends at sample
    (t + 1)·hop − 1; samples past the end read as zeros."""
    n = wave.shape[-1]
    t = num_frames(n, n_fft, hop_length)
    pad = left_pad(n_fft, hop_length)
    right = (t - 1) * hop_length + n_fft - pad - n
    return analyse(F.pad(wave, (pad, right)), n_fft, hop_length)


def causal_istft(spec: Tensor, n_fft: int = 2048, hop_length: int = 441, length: int | None = None) -> Tensor:
    """complex (..., f, t) -> real (..., length): the inverse of ``causal_stft``. ``length`` (default: all of
    them) is at most t·hop − P, the samples whose every frame is among the t."""
    pad = left_pad(n_fft, hop_length)
    t = spec.shape[-1]
    full = t * hop_length - pad  # samples whose every frame is among the t
    n = full if length is None else length
    if not 0 < n <= full:
        raise ValueError(f"{t} causal frames cover 1 to {full} samples, asked for {n}")
    wave = synthesise(spec, n_fft, hop_length)[..., pad : pad + n]
    env = envelope(n_fft, hop_length, wave.device, wave.dtype)  # sample pad + i sits at (pad + i) mod hop
    return wave / env.roll(-(pad % hop_length)).repeat((n + hop_length - 1) // hop_length)[:n]
