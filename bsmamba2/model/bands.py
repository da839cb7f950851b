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

    def layout(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per run of equal-width bands (``width_runs``): (γ·√n (G, n), weightᵀ (G, n, d), bias (G, 1, d)),
        stacked from the parameters (differentiable; ``detach`` for a snapshot)."""
        norms = [cast(RMSNorm, cast(nn.Sequential, m)[0]) for m in self.to_features]
        projs = [cast(nn.Linear, cast(nn.Sequential, m)[1]) for m in self.to_features]
        out = []
        for first, count, _ in width_runs(self.band_features):
            band = range(first, first + count)
            gamma = torch.stack([norms[k].gamma * norms[k].scale for k in band])
            w = torch.stack([projs[k].weight.t() for k in band])
            b = torch.stack([projs[k].bias for k in band])[:, None]
            out.append((gamma, w, b))
        return out

    def forward_grouped(self, x: Tensor) -> Tensor:
        """``forward`` with each run of equal-width bands as one batched product (7 for the paper's bands);
        same function, other rounding."""
        return split_runs(x, width_runs(self.band_features), self.layout())


class MaskEstimator(nn.Module):
    """Per-band MLP: Linear(d, mult·d) → Tanh → Linear(mult·d, 2·features) → GLU. One per stem.

    This is the official code's head (OFFICIAL_SPEC §1.7): it has no norm of its own (a shared final_norm
    precedes it), unlike the paper's text. Names: ``to_freqs.{k}.0.0`` and ``to_freqs.{k}.0.2``.
    """

    def __init__(self, band_features: tuple[int, ...], dim: int, mlp_mult: int = 4) -> None:
        super().__init__()
        hidden = dim * mlp_mult
        self.band_features = band_features
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

    def layout(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per run of equal-width bands: (W₁ᵀ (G, d, hidden), b₁ (G, 1, hidden), W₂ᵀ (G, hidden, 2n),
        b₂ (G, 1, 2n)), stacked from the parameters (differentiable)."""
        mlps = [cast(nn.Sequential, cast(nn.Sequential, net)[0]) for net in self.to_freqs]
        first_l = [cast(nn.Linear, mlp[0]) for mlp in mlps]
        second = [cast(nn.Linear, mlp[2]) for mlp in mlps]
        out = []
        for first, count, _ in width_runs(self.band_features):
            band = range(first, first + count)
            out.append(
                (
                    torch.stack([first_l[k].weight.t() for k in band]),
                    torch.stack([first_l[k].bias for k in band])[:, None],
                    torch.stack([second[k].weight.t() for k in band]),
                    torch.stack([second[k].bias for k in band])[:, None],
                )
            )
        return out

    def forward_grouped(self, z: Tensor) -> Tensor:
        """``forward`` with each run of equal-width bands as one batched product; same function, other
        rounding."""
        return mask_runs(z, width_runs(self.band_features), self.layout())


def width_runs(widths: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Runs of consecutive bands of equal feature width: (first band, band count G, features per band n)."""
    runs: list[tuple[int, int, int]] = []
    k = 0
    while k < len(widths):
        j = k
        while j < len(widths) and widths[j] == widths[k]:
            j += 1
        runs.append((k, j - k, widths[k]))
        k = j
    return runs


def split_runs(
    x: Tensor, runs: list[tuple[int, int, int]], layout: list[tuple[Tensor, Tensor, Tensor]]
) -> Tensor:
    """The band split from a ``BandSplit.layout``: x (b, t, Σ features) -> (b, t, k, d). Each run of G bands
    of width n: the repo's RMSNorm per band, then one (G-batched) product."""
    b, t, _ = x.shape
    outs, off = [], 0
    for (_, count, n), (gamma, w, bias) in zip(runs, layout, strict=True):
        xg = x[..., off : off + count * n].reshape(b * t, count, n)  # (b·t, G, n)
        xg = F.normalize(xg, dim=-1) * gamma  # (√n folded into gamma)
        y = torch.baddbmm(bias, xg.transpose(0, 1), w)  # (G, b·t, d)
        outs.append(y.transpose(0, 1))
        off += count * n
    return torch.cat(outs, dim=1).view(b, t, -1, outs[0].shape[-1])  # (b, t, k, d)


def mask_runs(
    z: Tensor, runs: list[tuple[int, int, int]], layout: list[tuple[Tensor, Tensor, Tensor, Tensor]]
) -> Tensor:
    """One stem's mask heads from a ``MaskEstimator.layout``: z (b, t, k, d) -> (b, t, Σ features). Each run
    of G bands: Linear -> Tanh -> Linear -> GLU as two G-batched products."""
    b, t, k, d = z.shape
    zt = z.reshape(b * t, k, d).transpose(0, 1)  # (k, b·t, d)
    outs = []
    for (first, count, _), (w1, b1, w2, b2) in zip(runs, layout, strict=True):
        h = torch.tanh(torch.baddbmm(b1, zt[first : first + count], w1))  # (G, b·t, hidden)
        o = F.glu(torch.baddbmm(b2, h, w2), dim=-1)  # (G, b·t, n)
        outs.append(o.transpose(0, 1).reshape(b * t, -1))  # (b·t, G·n)
    return torch.cat(outs, dim=-1).view(b, t, -1)


class GroupedBands:
    """The band split and the mask estimators of a model as run-batched products (``width_runs``: 7 runs
    for the paper's 62 bands), from detached copies of the weights taken when it is made: the same function
    in a few dozen kernels instead of hundreds, for streaming and inference. A model trained further needs a
    new one (``BandSplit.forward_grouped`` / ``MaskEstimator.forward_grouped`` use the live parameters).
    Rounding differs from the per-band modules' (another summation order)."""

    def __init__(self, split: BandSplit, estimators: list[MaskEstimator]) -> None:
        self.groups = width_runs(split.band_features)  # (first band, bands, features per band)
        with torch.no_grad():
            self.split_layout = [(g.clone(), w.contiguous(), b.clone()) for g, w, b in split.layout()]
            self.mask_layouts = [
                [
                    (w1.contiguous(), b1.clone(), w2.contiguous(), b2.clone())
                    for w1, b1, w2, b2 in est.layout()
                ]
                for est in estimators
            ]

    def split(self, x: Tensor) -> Tensor:  # x (b, t, sum(features)) -> (b, t, k, d), as BandSplit
        return split_runs(x, self.groups, self.split_layout)

    def masks(self, z: Tensor) -> Tensor:  # z (b, t, k, d) -> (b, s, t, sum(features)), as the estimators
        return torch.stack([mask_runs(z, self.groups, lay) for lay in self.mask_layouts], dim=1)
