"""Band split (paper §III-A) and mask estimation (paper §III-C, in the official code's form).

Axis legend: b batch, t frames, k bands, d model dim, f frequency bins, c audio channels, r real/imag part.
Stereo and the real/imaginary parts are folded into the band features in the official order: feature index
4f + 2c + r for bin f, channel c, part r (OFFICIAL_SPEC §1.2); band k owns features
[C·2·s_k, C·2·(s_k + f_k)) where s_k is its first bin and f_k its width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bsmamba2.model.norms import RMSNorm


class BandSplit(nn.Module):
    """Per-band RMSNorm + Linear to ``dim``; band outputs stacked on a new band axis.

    Parameter names follow the official model: ``to_features.{k}.0.gamma``, ``to_features.{k}.1.weight``.
    """

    def __init__(self, band_features: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.band_features = band_features
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(n), nn.Linear(n, dim)) for n in band_features)

    def forward(self, x: Tensor) -> Tensor:  # x (b, t, sum(band_features)) -> (b, t, k, d)
        parts = x.split(self.band_features, dim=-1)
        return torch.stack([net(part) for net, part in zip(self.to_features, parts, strict=True)], dim=-2)


class MaskEstimator(nn.Module):
    """Per-band MLP: Linear(d, mult·d) → Tanh → Linear(mult·d, 2·features) → GLU. One per stem.

    This is the official code's head (OFFICIAL_SPEC §1.7): it has no norm of its own (a shared final_norm
    precedes it), unlike the paper's text. Names: ``to_freqs.{k}.0.0`` and ``to_freqs.{k}.0.2``.
    """

    def __init__(self, band_features: tuple[int, ...], dim: int, mlp_mult: int = 4) -> None:
        super().__init__()
        hidden = dim * mlp_mult
        self.to_freqs = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * n)),
                nn.GLU(dim=-1),  # first half · sigmoid(second half)
            )
            for n in band_features
        )

    def forward(self, z: Tensor) -> Tensor:  # z (b, t, k, d) -> mask features (b, t, sum(band_features))
        bands = z.unbind(dim=-2)
        return torch.cat([net(band) for net, band in zip(self.to_freqs, bands, strict=True)], dim=-1)
