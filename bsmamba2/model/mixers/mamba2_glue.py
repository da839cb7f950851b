"""The memory-bound glue around a Mamba2 scan as module-free functions, and their torch.compile'd forms.

``mixer_in`` / ``mixer_out`` are a mixer's way in (in_proj, causal conv + SiLU, Δ) and out (gated norm,
out_proj); ``block_in`` / ``block_out`` add the prenorm block's norm, flip and residual. ``fused_glue(name)``
compiles one of them (or ``mamba2_pair``'s paired forms) once per process, so every mixer of a model shares
one compiled graph per input shape; ``FusedMamba2Block`` and ``PairedMamba2Block`` (``mamba2.py``) call them.
On CUDA the compiled forms are AOTInductor packages kept in the user cache (``glue_cache``): a fresh process
loads them instead of tracing and compiling again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bsmamba2.model.mixers.glue_cache import GlueCall
from bsmamba2.model.mixers.mamba2_pair import pair_in, pair_out
from bsmamba2.model.norms import block_rms_norm, gated_rms_norm


def mixer_in(
    u: Tensor, in_w: Tensor, conv_w: Tensor, conv_b: Tensor, dt_bias: Tensor, sizes: tuple[int, int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """in_proj, causal depthwise conv + SiLU on x‖B‖C, Δ = softplus(dt + dt_bias) in float32.

    u (b, l, d_model) -> z (b, l, d_inner), xBC (b, l, d_inner + 2·g·n), Δ (b, l, h). ``sizes`` =
    (d_inner, g·n, h). The convolution is written as d_conv shifted multiply-adds over the sequence axis
    (out_t = bias + Σ_k w_k·x_{t-(K-1)+k}, zeros before t = 0): the same function as the official
    ``conv1d(padding=K-1)[..., :l]``, and one fused elementwise kernel once compiled. Products and sums run in
    float32 and are rounded once to the projection's dtype.
    """
    d_inner, gn, h = sizes
    l = u.shape[1]
    z, xBC, dt = F.linear(u, in_w).split([d_inner, d_inner + 2 * gn, h], dim=-1)
    ct = torch.promote_types(xBC.dtype, torch.float32)  # float32 (float64 stays float64)
    K = conv_w.shape[-1]
    xp = F.pad(xBC, (0, 0, K - 1, 0)).to(ct)  # (b, l + K - 1, ch): K - 1 zeros before t = 0
    w = conv_w[:, 0, :].to(ct)  # (ch, K)
    acc = conv_b.to(ct) + xp[:, 0:l] * w[:, 0]
    for k in range(1, K):
        acc = acc + xp[:, k : k + l] * w[:, k]
    return z, F.silu(acc).to(xBC.dtype), F.softplus(dt.to(ct) + dt_bias.to(ct))


def mixer_out(y: Tensor, z: Tensor, norm_w: Tensor, eps: float, out_w: Tensor) -> Tensor:
    """Gated RMSNorm of y·SiLU(z) and out_proj: (b, l, d_inner) ×2 -> (b, l, d_model)."""
    return F.linear(gated_rms_norm(y, z, norm_w, eps), out_w)


def block_in(
    x: Tensor,
    norm_w: Tensor,
    eps: float,
    in_w: Tensor,
    conv_w: Tensor,
    conv_b: Tensor,
    dt_bias: Tensor,
    sizes: tuple[int, int, int],
    flip: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """A prenorm block's way in: (flip along the sequence,) block RMSNorm in float32, then ``mixer_in`` in the
    projection weight's dtype."""
    if flip:
        x = x.flip(1)
    u = block_rms_norm(x, norm_w, eps).to(in_w.dtype)
    return mixer_in(u, in_w, conv_w, conv_b, dt_bias, sizes)


def block_out(
    y: Tensor, z: Tensor, norm_w: Tensor, eps: float, out_w: Tensor, x: Tensor, flip: bool
) -> Tensor:
    """A prenorm block's way out: x + (flipped back) ``mixer_out``, in x's dtype."""
    out = mixer_out(y, z, norm_w, eps, out_w)
    if flip:
        out = out.flip(1)
    return x + out.to(x.dtype)


COMPILED: dict[str, Callable[..., Any]] = {}
GLUE: dict[str, Callable[..., Any]] = {
    "in": block_in,
    "out": block_out,
    "pair_in": pair_in,
    "pair_out": pair_out,
}


def fused_glue(name: str) -> Callable[..., Any]:
    """One of ``GLUE`` compiled, built once per process (module-free functions, so every mixer of a model shares
    one compiled form per input shape): ``glue_cache.GlueCall``, ahead-of-time packages kept in the user cache
    on the devices where ``glue_cache.enabled`` says so, else ``torch.compile(dynamic=False)``."""
    if name not in COMPILED:
        COMPILED[name] = GlueCall(GLUE[name])
    return COMPILED[name]
