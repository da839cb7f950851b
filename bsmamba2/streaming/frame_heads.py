"""The band split, the final norm and the mask heads of a causal BSMamba2 in ``FramePlan``'s form.

Same functions as ``BandSplit``, ``RMSNorm`` and ``MaskEstimator`` (``bsmamba2.model.bands``), from copies of
the weights taken when a plan is built, in fewer kernels for one-frame steps:

* a band's RMSNorm scales its row by one number, so it commutes with the band's product: the products run on
  the raw features (γ·√n folded into the weights) and one multiply-add applies 1/‖x‖ and the bias to all 62
  bands at once; the products of a run of equal-width bands write into one preallocated (k, rows, d) result;
* the final norm's γ·√d folded into the first layer of every mask head, and that layer (d -> hidden for every
  band) one product over all bands instead of one per run of equal widths.

Axis legend: r rows (streams · frames), k bands, d model dim, G bands of a run, n features of a band.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from bsmamba2.model.bands import BandSplit, MaskEstimator, width_runs
from bsmamba2.model.norms import RMSNorm

NORM_EPS = 1e-12  # F.normalize's: x / max(‖x‖, eps), the official RMSNorm's


class FrameHeads:
    """The band split (features -> bands) and the mask heads (bands -> mask features) of a model."""

    def __init__(self, split: BandSplit, norm: RMSNorm, estimators: list[MaskEstimator]) -> None:
        self.runs = width_runs(split.band_features)  # (first band, G, n)
        with torch.no_grad():
            # (x/‖x‖ · g) W = (x W') / ‖x‖ with W' = diag(g) W: the band norm after the product
            # layout() gives the norms' γ; RMSNorm's √n scale (RMSNorm.scale) joins it here
            self.split_w = [
                ((g * n**0.5)[..., None] * w).contiguous()
                for (_, _, n), (g, w, _) in zip(self.runs, split.layout(), strict=True)
            ]  # (G, n, d)
            self.split_b = torch.cat([b for _, _, b in split.layout()])  # (k, 1, d)
            scale = (norm.gamma * norm.scale).detach()  # (d,)
            self.heads = []
            for est in estimators:
                lay = est.layout()
                w1 = torch.cat([w for w, _, _, _ in lay]) * scale[:, None]  # (k, d, hidden)
                b1 = torch.cat([b for _, b, _, _ in lay])  # (k, 1, hidden)
                second = [(w2.contiguous(), b2.clone()) for _, _, w2, b2 in lay]
                self.heads.append((w1.contiguous(), b1, second))
        self.num_bands = self.split_b.shape[0]

    def split(self, x: Tensor) -> Tensor:
        """x (r, Σ features) -> (k, r, d): each band's RMSNorm and Linear (the official ``BandSplit``)."""
        r = x.shape[0]
        k, d = self.num_bands, self.split_b.shape[-1]
        out = x.new_empty(k, r, d)
        nrm = x.new_empty(k, r)
        off = 0
        for (first, count, n), w in zip(self.runs, self.split_w, strict=True):
            xg = x[:, off : off + count * n].view(r, count, n).transpose(0, 1)  # (G, r, n)
            torch.linalg.vector_norm(xg, dim=-1, out=nrm[first : first + count])
            torch.bmm(xg, w, out=out[first : first + count])
            off += count * n
        inv = nrm.clamp_(min=NORM_EPS).reciprocal_()[..., None]  # (k, r, 1)
        return torch.addcmul(self.split_b, out, inv)

    def masks(self, z: Tensor) -> list[Tensor]:
        """z (k, r, d), the last layer's output -> per stem (r, Σ features): the final norm, then each band's
        Linear -> Tanh -> Linear -> GLU."""
        inv = torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_(min=NORM_EPS).reciprocal_()
        zn = z * inv  # (k, r, d), γ·√d in the first layer's weights
        out = []
        for w1, b1, second in self.heads:
            h = torch.baddbmm(b1, zn, w1).tanh_()  # (k, r, hidden)
            parts = []
            for (first, count, _), (w2, b2) in zip(self.runs, second, strict=True):
                o = F.glu(torch.baddbmm(b2, h[first : first + count], w2), dim=-1)  # (G, r, n)
                parts.append(o.transpose(0, 1).reshape(o.shape[1], -1))  # (r, G·n)
            out.append(torch.cat(parts, dim=-1))
        return out


def heads_of(split: object, norm: object, estimators: object) -> FrameHeads:
    """``FrameHeads`` from a model's modules (typed loosely: ``BandSplitSeparator`` declares them as
    ``nn.Module``)."""
    ests = [cast(MaskEstimator, e) for e in cast(list, estimators)]
    return FrameHeads(cast(BandSplit, split), cast(RMSNorm, norm), ests)
