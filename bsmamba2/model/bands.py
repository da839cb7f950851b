"""Band split (paper §III-A) and mask estimation (paper §III-C, in the official code's form).

Axis legend: b batch, t frames, k bands, d model dim, f frequency bins, c audio channels, r real/imag part,
G bands of one width run, h hidden units of a mask head.
Stereo and the real/imaginary parts are folded into the band features in the official order: feature index
4f + 2c + r for bin f, channel c, part r (OFFICIAL_SPEC §1.2); band k owns features
[C·2·s_k, C·2·(s_k + f_k)) where s_k is its first bin and f_k its width.

Both modules hold one small module per band, under the official parameter names, and by default compute them
as one batched product per run of equal-width bands (``width_runs``: 7 runs for the paper's 62 bands): on an
H200 the 62 per-band Linears were ~190 of a batch's ~1,540 kernel launches, each a few microseconds of GPU
work, so launch overhead. ``grouped=False`` (or ``set_grouped``) runs the per-band modules, the reference.
The two differ only in rounding (another summation order in the products).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.norms import RMSNorm

Runs = list[tuple[int, int, int]]  # (first band, band count G, features per band n)
SplitLayout = list[tuple[Tensor, Tensor, Tensor]]  # per run: γ (G, n), Wᵀ (G, n, d), bias (G, 1, d)
MaskLayout = list[tuple[Tensor, Tensor, Tensor, Tensor]]  # per run: W₁ᵀ, b₁, W₂ᵀ, b₂ (batched over G)
L = TypeVar("L")

# Inference on the CPU runs a mask head's run of G bands in pieces of at most this many hidden activations
# (bands · tokens · h): the whole widest run of the paper model at batch 4 (24 bands · 3,204 frames · 1,024)
# would hold 315 MB at once, where the per-band modules hold 13 MB. The heads are compute-bound there, and
# pieces of 2^19..2^24 or whole runs took the per-band modules' time (bundled model, 4 x 401 frames, 1 thread:
# 187-216 ms vs 190 ms), so the smallest working set wins. Training, GPUs and tracing run whole runs.
CPU_INFERENCE_HIDDEN = 1 << 20


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast gives matrix products on ``device`` now, or None when autocast is off there."""
    if device.type not in (
        "cpu",
        "cuda",
        "xpu",
        "mps",
    ):  # meta (FLOP counting) and others: autocast never applies
        return None
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


class _RunBatched(nn.Module):
    """What the band split and the mask estimators share: the width runs, the switch between the grouped and
    the per-band form, and the run-stacked weights (stacked under autograd while it records, so gradients
    reach the per-band parameters; otherwise cached and remade when a parameter changes)."""

    def __init__(self, band_features: tuple[int, ...], grouped: bool) -> None:
        super().__init__()
        self.band_features = band_features
        self.runs: Runs = width_runs(band_features)
        self.grouped = grouped
        self._cache: tuple[tuple[Any, ...], Any] | None = None

    def _use_grouped(self) -> bool:
        return self.grouped and not _tracing()  # traced graphs (ONNX export) keep the per-band modules

    def _stacked(
        self, live: Callable[[], L], frozen: Callable[[torch.dtype | None], L], device: torch.device
    ) -> L:
        """``live()`` while autograd records through the parameters; else ``frozen(dtype)``, cached per
        device, autocast dtype, inference mode (its tensors cannot enter autograd later) and every
        parameter's storage and version counter (an optimizer step, ``load_state_dict`` or any in-place
        write under ``no_grad`` bumps it). Writes through ``.data`` are invisible to version counters, as
        to autograd: call ``refresh()`` after them. The cache holds one more copy of these weights."""
        params = list(self.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return live()
        dtype = _autocast_dtype(device)
        versions, storage = tuple(p._version for p in params), tuple(p.data_ptr() for p in params)
        key = (device, dtype, torch.is_inference_mode_enabled(), versions, storage)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, frozen(dtype))
        return cast(L, self._cache[1])

    def refresh(self) -> None:
        """Drop the cached stacked weights (remade on the next inference call)."""
        self._cache = None

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to() / .half() / .cuda() replace parameter storage, which may land at a freed address
        self.refresh()
        return super()._apply(fn, recurse)


class BandSplit(_RunBatched):
    """Per-band RMSNorm + Linear to ``dim``; band outputs stacked on a new band axis.

    Parameter names follow the official model: ``to_features.{k}.0.gamma``, ``to_features.{k}.1.weight``.
    """

    def __init__(self, band_features: tuple[int, ...], dim: int, grouped: bool = True) -> None:
        super().__init__(band_features, grouped)
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(n), nn.Linear(n, dim)) for n in band_features)

    def forward(self, x: Tensor) -> Tensor:
        """x (b, t, Σ band_features) -> (b, t, k, d)."""
        return self.forward_grouped(x) if self._use_grouped() else self.forward_per_band(x)

    def forward_per_band(self, x: Tensor) -> Tensor:
        """The reference: each band's own modules. x (b, t, Σ band_features) -> (b, t, k, d)."""
        parts = x.split(self.band_features, dim=-1)
        return torch.stack([net(part) for net, part in zip(self.to_features, parts, strict=True)], dim=-2)

    def forward_grouped(self, x: Tensor) -> Tensor:
        """``forward_per_band`` with each run of equal-width bands as one batched product."""
        return split_runs(x, self.runs, self._stacked(self.layout, self._frozen, x.device))

    def layout(self) -> SplitLayout:
        """Per run of equal-width bands (``width_runs``): (γ (G, n), weightᵀ (G, n, d), bias (G, 1, d)),
        stacked from the parameters (differentiable; ``detach`` for a snapshot)."""
        norms = [cast(RMSNorm, cast(nn.Sequential, m)[0]) for m in self.to_features]
        projs = [cast(nn.Linear, cast(nn.Sequential, m)[1]) for m in self.to_features]
        out = []
        for first, count, _ in self.runs:
            band = range(first, first + count)
            gamma = torch.stack([norms[k].gamma for k in band])
            w = torch.stack([projs[k].weight.t() for k in band])
            b = torch.stack([projs[k].bias for k in band])[:, None]
            out.append((gamma, w, b))
        return out

    def _frozen(self, dtype: torch.dtype | None) -> SplitLayout:
        # γ stays in the parameters' dtype: the norm runs outside autocast's products, as in RMSNorm
        return [(g, w.to(dtype).contiguous(), b.to(dtype)) for g, w, b in self.layout()]


class MaskEstimator(_RunBatched):
    """Per-band MLP: Linear(d, mult·d) → Tanh → Linear(mult·d, 2·features) → GLU. One per stem.

    This is the official code's head (OFFICIAL_SPEC §1.7): it has no norm of its own (a shared final_norm
    precedes it), unlike the paper's text. Names: ``to_freqs.{k}.0.0`` and ``to_freqs.{k}.0.2``.
    """

    def __init__(
        self, band_features: tuple[int, ...], dim: int, mlp_mult: int = 4, grouped: bool = True
    ) -> None:
        super().__init__(band_features, grouped)
        hidden = dim * mlp_mult
        self.to_freqs = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * n)),
                nn.GLU(dim=-1),  # first half · sigmoid(second half)
            )
            for n in band_features
        )

    def forward(self, z: Tensor) -> Tensor:
        """z (b, t, k, d) -> mask features (b, t, Σ band_features)."""
        return self.forward_grouped(z) if self._use_grouped() else self.forward_per_band(z)

    def forward_per_band(self, z: Tensor) -> Tensor:
        """The reference: each band's own MLP. z (b, t, k, d) -> (b, t, Σ band_features)."""
        bands = z.unbind(dim=-2)
        return torch.cat([net(band) for net, band in zip(self.to_freqs, bands, strict=True)], dim=-1)

    def forward_grouped(self, z: Tensor) -> Tensor:
        """``forward_per_band`` with each run of equal-width bands as two batched products."""
        layout = self._stacked(self.layout, self._frozen, z.device)
        inference = not torch.is_grad_enabled() and z.device.type == "cpu"
        return mask_runs(z, self.runs, layout, max_hidden=CPU_INFERENCE_HIDDEN if inference else None)

    def layout(self) -> MaskLayout:
        """Per run of equal-width bands: (W₁ᵀ (G, d, h), b₁ (G, 1, h), W₂ᵀ (G, h, 2n), b₂ (G, 1, 2n)),
        stacked from the parameters (differentiable)."""
        mlps = [cast(nn.Sequential, cast(nn.Sequential, net)[0]) for net in self.to_freqs]
        first_l = [cast(nn.Linear, mlp[0]) for mlp in mlps]
        second = [cast(nn.Linear, mlp[2]) for mlp in mlps]
        out = []
        for first, count, _ in self.runs:
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

    def _frozen(self, dtype: torch.dtype | None) -> MaskLayout:
        return [tuple(p.to(dtype).contiguous() for p in run) for run in self.layout()]  # type: ignore[misc]


def set_grouped(model: nn.Module, grouped: bool) -> None:
    """Switch every band split and mask estimator in ``model`` to the run-batched products (True, the
    default) or to the per-band reference modules (False)."""
    for m in model.modules():
        if isinstance(m, _RunBatched):
            m.grouped = grouped


def width_runs(widths: tuple[int, ...]) -> Runs:
    """Runs of consecutive bands of equal feature width: (first band, band count G, features per band n)."""
    runs: Runs = []
    k = 0
    while k < len(widths):
        j = k
        while j < len(widths) and widths[j] == widths[k]:
            j += 1
        runs.append((k, j - k, widths[k]))
        k = j
    return runs


def split_runs(x: Tensor, runs: Runs, layout: SplitLayout) -> Tensor:
    """The band split from a ``BandSplit.layout``: x (b, t, Σ features) -> (b, t, k, d). Each run of G bands
    of width n: the repo's RMSNorm per band (the same operations as ``RMSNorm``), then one G-batched product.
    Without autograd the products write straight into one (k, b·t, d) buffer, returned as a (b, t, k, d) view:
    on the CPU the per-run outputs and their concatenation cost as much as the products (measured 1.8x)."""
    b, t, _ = x.shape
    if torch.is_grad_enabled():
        outs, off = [], 0
        for (_, count, n), (gamma, w, bias) in zip(runs, layout, strict=True):
            xg = x[..., off : off + count * n].reshape(b * t, count, n)  # (b·t, G, n)
            xg = F.normalize(xg, dim=-1) * n**0.5 * gamma
            outs.append(torch.baddbmm(bias, xg.transpose(0, 1), w).transpose(0, 1))  # (b·t, G, d)
            off += count * n
        return torch.cat(outs, dim=1).view(b, t, -1, outs[0].shape[-1])  # (b, t, k, d)
    # out= bypasses autocast, so its casts are made here: the products in autocast's dtype, as above
    dtype = _autocast_dtype(x.device) or layout[0][1].dtype
    out = x.new_empty(sum(count for _, count, _ in runs), b * t, layout[0][1].shape[-1], dtype=dtype)
    off = 0
    for (first, count, n), (gamma, w, bias) in zip(runs, layout, strict=True):
        xg = x[..., off : off + count * n].reshape(b * t, count, n)  # (b·t, G, n)
        xg = (F.normalize(xg, dim=-1) * n**0.5 * gamma).to(dtype)
        torch.baddbmm(bias.to(dtype), xg.transpose(0, 1), w.to(dtype), out=out[first : first + count])
        off += count * n
    return rearrange(out, "k (b t) d -> b t k d", b=b)


def mask_runs(z: Tensor, runs: Runs, layout: MaskLayout, max_hidden: int | None = None) -> Tensor:
    """One stem's mask heads from a ``MaskEstimator.layout``: z (b, t, k, d) -> (b, t, Σ features). Each run
    of G bands: Linear -> Tanh -> Linear -> GLU as two G-batched products. ``max_hidden`` (inference only):
    run the bands of a run in pieces of at most that many hidden activations, the tanh in place and the GLU
    written straight into the output."""
    b, t, k, d = z.shape
    zt = z.reshape(b * t, k, d).transpose(0, 1)  # (k, b·t, d)
    outs, out, off = [], None, 0
    for (first, count, n), (w1, b1, w2, b2) in zip(runs, layout, strict=True):
        step = count if max_hidden is None else max(1, max_hidden // (b * t * w1.shape[-1]))
        for lo in range(0, count, step):
            hi = min(count, lo + step)
            h = torch.baddbmm(b1[lo:hi], zt[first + lo : first + hi], w1[lo:hi])  # (G', b·t, h)
            if max_hidden is None:
                o = F.glu(torch.baddbmm(b2[lo:hi], torch.tanh(h), w2[lo:hi]), dim=-1)  # (G', b·t, n)
                outs.append(o.transpose(0, 1).reshape(b * t, -1))  # (b·t, G'·n)
                continue
            y = torch.baddbmm(b2[lo:hi], torch.tanh_(h), w2[lo:hi])  # (G', b·t, 2n)
            if out is None:
                out = y.new_empty(b * t, sum(c * m for _, c, m in runs))  # (b·t, Σ features)
            dest = out[:, off : off + (hi - lo) * n].view(b * t, hi - lo, n).transpose(0, 1)  # (G', b·t, n)
            dest.copy_(F.glu(y, dim=-1))  # (G', b·t, n): a piece-sized temporary, no concatenation
            off += (hi - lo) * n
    if out is None:
        out = torch.cat(outs, dim=-1)
    return out.view(b, t, -1)


class GroupedBands:
    """The band split and the mask estimators of a model as run-batched products, from detached copies of
    the weights taken when it is made (streaming's one-frame steps). A model trained further needs a new one
    (the modules' own ``forward`` tracks weight changes itself). Rounding differs from the per-band modules'
    (another summation order)."""

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
