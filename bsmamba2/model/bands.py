"""Band split (paper §III-A) and mask estimation (paper §III-C, in the official code's form).

Axis legend: b batch, t frames, k bands, d model dim, f frequency bins, c audio channels, r real/imag part.
Stereo and the real/imaginary parts are folded into the band features in the official order: feature index
4f + 2c + r for bin f, channel c, part r (OFFICIAL_SPEC §1.2); band k owns features
[C·2·s_k, C·2·(s_k + f_k)) where s_k is its first bin and f_k its width.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
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


class GroupedBands:
    """The band split and the mask estimators of a model, with runs of bands of equal width computed as one
    batched product each (7 groups for the paper's 62 bands): the same function in a few dozen kernels
    instead of hundreds, for streaming, where a frame's work is small and the kernel count dominates.

    Inference only: it holds stacked copies of the weights taken when it is made (``of``), so a model
    trained further needs a new one. Rounding differs from the per-band modules' (another summation order).
    """

    def __init__(self, split: BandSplit, estimators: list[MaskEstimator]) -> None:
        widths = split.band_features
        self.groups: list[tuple[int, int, int]] = []  # (first band, bands, features per band)
        k = 0
        while k < len(widths):
            j = k
            while j < len(widths) and widths[j] == widths[k]:
                j += 1
            self.groups.append((k, j - k, widths[k]))
            k = j
        norms = [cast(RMSNorm, cast(nn.Sequential, m)[0]) for m in split.to_features]
        projs = [cast(nn.Linear, cast(nn.Sequential, m)[1]) for m in split.to_features]
        # per stem, per band: the MLP Linear -> Tanh -> Linear before the GLU
        mlps = [
            [cast(nn.Sequential, cast(nn.Sequential, net)[0]) for net in est.to_freqs] for est in estimators
        ]
        first = [[cast(nn.Linear, mlp[0]) for mlp in stem] for stem in mlps]
        second = [[cast(nn.Linear, mlp[2]) for mlp in stem] for stem in mlps]
        with torch.no_grad():
            self.split_w = self._stack([[p.weight for p in projs]])  # per group (G, d, n)
            self.split_b = self._stack([[p.bias for p in projs]])  # (G, d)
            self.gamma = self._stack([[m.gamma * m.scale for m in norms]])  # (G, n)
            self.w1 = self._stack([[lin.weight for lin in stem] for stem in first])  # (s, G, hidden, d)
            self.b1 = self._stack([[lin.bias for lin in stem] for stem in first])  # (s, G, hidden)
            self.w2 = self._stack([[lin.weight for lin in stem] for stem in second])  # (s, G, 2n, hidden)
            self.b2 = self._stack([[lin.bias for lin in stem] for stem in second])  # (s, G, 2n)

    def _stack(self, per_stem: list[list[Tensor]]) -> list[Tensor]:
        """Per group, the bands' tensors stacked on a band axis (and a stem axis first if there are several)."""
        out = []
        for first, count, _ in self.groups:
            parts = [torch.stack(list(bands[first : first + count])) for bands in per_stem]
            out.append(parts[0].detach().clone() if len(parts) == 1 else torch.stack(parts))
        return out

    def split(self, x: Tensor) -> Tensor:  # x (b, t, sum(features)) -> (b, t, k, d), as BandSplit
        outs, off = [], 0
        for (_, count, n), w, bias, gamma in zip(
            self.groups, self.split_w, self.split_b, self.gamma, strict=True
        ):
            xg = x[..., off : off + count * n].unflatten(-1, (count, n))  # (b, t, G, n)
            xg = F.normalize(xg, dim=-1) * gamma  # the repo's RMSNorm per band (√n folded into gamma)
            outs.append(torch.einsum("btgn,gdn->btgd", xg, w) + bias)
            off += count * n
        return torch.cat(outs, dim=-2)

    def masks(self, z: Tensor) -> Tensor:  # z (b, t, k, d) -> (b, s, t, sum(features)), as the estimators
        outs = []
        for (first, count, _), w1, b1, w2, b2 in zip(
            self.groups, self.w1, self.b1, self.w2, self.b2, strict=True
        ):
            if w1.dim() == 3:  # one stem: give it its stem axis
                w1, b1, w2, b2 = w1[None], b1[None], w2[None], b2[None]
            zg = z[:, :, first : first + count]  # (b, t, G, d)
            h = torch.tanh(torch.einsum("btgd,sghd->bstgh", zg, w1) + b1[:, None])  # (b, s, t, G, hidden)
            o = torch.einsum("bstgh,sgoh->bstgo", h, w2) + b2[:, None]  # (b, s, t, G, 2n)
            outs.append(F.glu(o, dim=-1).flatten(-2))  # (b, s, t, G·n)
        return torch.cat(outs, dim=-1)
