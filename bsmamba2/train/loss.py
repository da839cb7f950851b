"""The training loss: the paper's Eq. 8 with the official implementation's details (OFFICIAL_SPEC §5).

    L = λ_time · mean|ŝ − s̃|  +  Σ_{w ∈ {4096, 2048, 1024, 512, 256}} mean|STFT_w(ŝ) − STFT_w(s̃)|

- ŝ is the model's waveform estimate, s the reference stem.
- s̃ = iSTFT(STFT(s)) with the model's own STFT (2048 / 441): the official code compares against the
  round-tripped target, not s itself.
- λ_time = 10 (paper §III-D). The multi-resolution weight is 1.
- STFT_w: n_fft = max(w, 2048), win_length = w (a periodic Hann window, zero-padded to n_fft by torch.stft),
  hop 147, centred with reflect padding, complex output.
- |·| of a complex difference is its modulus, as in ``nn.L1Loss`` on complex tensors. Every mean runs over all
  elements (batch, stems, channels, bins, frames).

The loss is computed in float32 even when the model runs under bf16 autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bsmamba2.spectral import istft, stft
from bsmamba2.train.config import LossConfig


class LossTerms(NamedTuple):
    """The total loss and its two (unweighted) terms, all 0-dim tensors."""

    total: Tensor
    time: Tensor  # mean |ŝ − s̃|
    stft: Tensor  # Σ_w mean |STFT_w(ŝ) − STFT_w(s̃)|


def round_trip(wave: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """s̃ = iSTFT(STFT(s)) with the model's STFT; (..., N) -> (..., N)."""
    return istft(stft(wave, n_fft, hop_length), n_fft, hop_length, length=wave.shape[-1])


def multi_resolution_stft_l1(
    est: Tensor,
    ref: Tensor,
    windows: tuple[int, ...] = (4096, 2048, 1024, 512, 256),
    hop_length: int = 147,
    min_n_fft: int = 2048,
) -> Tensor:
    """Σ_w mean|STFT_w(est) − STFT_w(ref)| over the window lengths ``windows``; est, ref (..., N) -> 0-dim.

    n_fft = max(w, min_n_fft) and win_length = w, so small windows are zero-padded to ``min_n_fft`` points
    (OFFICIAL_SPEC §5). Signals must be longer than n_fft // 2 samples (reflect padding).
    """
    x = torch.stack([est, ref]).reshape(2, -1, est.shape[-1]).float()  # (2, prod(...), N)
    total = est.new_zeros((), dtype=torch.float32)
    for win in windows:
        n_fft = max(win, min_n_fft)
        spec = torch.stft(
            x.reshape(-1, x.shape[-1]),
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win,
            window=torch.hann_window(win, periodic=True, device=x.device, dtype=x.dtype),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).reshape(2, -1, n_fft // 2 + 1, 1 + x.shape[-1] // hop_length)  # (2, prod(...), F_w, T_w)
        total = total + (spec[0] - spec[1]).abs().mean()  # modulus of the complex difference
    return total


def separation_loss(
    est: Tensor,
    target: Tensor,
    cfg: LossConfig | None = None,
    n_fft: int = 2048,
    hop_length: int = 441,
) -> LossTerms:
    """Eq. 8 / OFFICIAL_SPEC §5. est, target: (B, S, C, N) waveforms (any leading shape) -> ``LossTerms``.

    ``n_fft`` and ``hop_length`` are the model's STFT, used for the round-tripped target. ``cfg`` defaults to
    the official loss (``LossConfig()``).
    """
    cfg = cfg if cfg is not None else LossConfig()
    if est.shape != target.shape:
        raise ValueError(f"estimate {tuple(est.shape)} and target {tuple(target.shape)} differ in shape")
    est = est.float()
    target = target.float()
    if cfg.round_trip_target:
        with torch.no_grad():  # the target carries no gradient anyway; skip recording the round trip
            target = round_trip(target, n_fft, hop_length)
    time = (est - target).abs().mean()
    spec = multi_resolution_stft_l1(est, target, cfg.windows, cfg.hop_length, cfg.min_n_fft)
    return LossTerms(cfg.lambda_time * time + cfg.stft_weight * spec, time, spec)
