"""Both directions of a bidirectional Mamba2 block at once: the module-free glue of ``PairedMamba2Block``.

The official bidirectional block runs a forward prenorm Mamba2 block over x and a second one (its own weights)
over flip(x), flipped back. Here the two directions are one stacked computation: a leading axis of 2
(axis legend: two = direction, 0 forward and 1 backward; n sequences, l steps, d model dim, ch conv channels,
h heads) holds both, every weight is stacked along it, and the backward direction is expressed by indexing (an
anti-causal convolution, a scan from the last step back) instead of flipped copies of the activations. The
function is the official block's (tests/test_fused_mixer.py checks it against the eager blocks).

``pair_in`` / ``pair_out`` are compiled by ``mamba2.py`` like ``block_in`` / ``block_out``; the scan between
them runs through an SSD backend's ``bidirectional`` form when it has one (the Triton kernels: one launch for
both directions), else ``bidirectional_scan`` (two calls over flipped views, any backend).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bsmamba2.model.mixers.ssd_types import SSDFn
from bsmamba2.model.norms import gated_rms_norm

# (x, dt, A (2, h), B, C, D (2, h) | None) -> y: the first half of the batch forward, the second backward
PairScan = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None], Tensor]


def directional_conv_silu(xBC: Tensor, conv_w: Tensor, conv_b: Tensor) -> Tensor:
    """SiLU of the depthwise convolution of each direction, in float32, rounded once to xBC's dtype.

    xBC (2, n, l, ch), conv_w (2, ch, K), conv_b (2, ch) -> (2, n, l, ch). Direction 0 is causal (step t sees
    t-K+1..t, zeros before the start), direction 1 anti-causal (t sees t+K-1..t, zeros after the end): the
    backward block's causal convolution of the flipped sequence, flipped back. Same shifted multiply-adds, in
    the same order, as ``mamba2.mixer_in``.
    """
    ct = torch.promote_types(xBC.dtype, torch.float32)
    K, l = conv_w.shape[-1], xBC.shape[2]
    w, b = conv_w.to(ct), conv_b.to(ct)
    fwd = F.pad(xBC[0], (0, 0, K - 1, 0)).to(ct)  # (n, l + K - 1, ch): K - 1 zeros before t = 0
    bwd = F.pad(xBC[1], (0, 0, 0, K - 1)).to(ct)  # K - 1 zeros after t = l - 1
    acc_f = b[0] + fwd[:, 0:l] * w[0, :, 0]
    acc_b = b[1] + bwd[:, K - 1 : K - 1 + l] * w[1, :, 0]
    for k in range(1, K):
        acc_f = acc_f + fwd[:, k : k + l] * w[0, :, k]
        acc_b = acc_b + bwd[:, K - 1 - k : K - 1 - k + l] * w[1, :, k]
    return F.silu(torch.stack([acc_f, acc_b])).to(xBC.dtype)


def pair_in(
    x: Tensor,
    norm_w: Tensor,
    eps: float,
    in_w: Tensor,
    conv_w: Tensor,
    conv_b: Tensor,
    dt_bias: Tensor,
    sizes: tuple[int, int, int],
    conv: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Both blocks' way in: block RMSNorm (float32), in_proj (one batched GEMM in in_w's dtype), conv + SiLU,
    Δ = softplus(dt + dt_bias) in float32. ``conv=False``: xBC before the convolution (a view of the GEMM's
    output), for a conv kernel of its own (``conv_triton.conv_silu``).

    x (n, l, d); norm_w (2, d), in_w (2, 2·d_inner + 2·g·n + h, d), conv_w (2, ch, K), conv_b (2, ch),
    dt_bias (2, h); ``sizes`` = (d_inner, g·n, h) -> z (2, n, l, d_inner), xBC (2, n, l, ch), Δ (2, n, l, h).
    """
    d_inner, gn, h = sizes
    n, l, d = x.shape
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    xn = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # the norm's statistics, shared
    u = (xn[None] * norm_w.to(xf.dtype)[:, None, None, :]).to(in_w.dtype)  # (2, n, l, d)
    zxbcdt = torch.bmm(u.reshape(2, n * l, d), in_w.transpose(1, 2)).view(2, n, l, -1)
    z, xBC, dt = zxbcdt.split([d_inner, d_inner + 2 * gn, h], dim=-1)
    ct = torch.promote_types(xBC.dtype, torch.float32)
    dt = F.softplus(dt.to(ct) + dt_bias.to(ct)[:, None, None, :])
    return z, directional_conv_silu(xBC, conv_w, conv_b) if conv else xBC, dt


def pair_out(y: Tensor, z: Tensor, norm_w: Tensor, eps: float, out_w: Tensor, x: Tensor) -> Tensor:
    """Both blocks' way out: gated RMSNorm of y·SiLU(z), out_proj (one batched GEMM), each block's residual.

    y, z (2, n, l, d_inner), norm_w (2, d_inner), out_w (2, d, d_inner), x (n, l, d) -> (n, l, 2·d): the
    forward block's output ‖ the backward block's, as the bidirectional block concatenates them.
    """
    two, n, l, d_inner = y.shape
    g = gated_rms_norm(y, z, norm_w[:, None, None, :], eps)
    out = torch.bmm(g.reshape(two, n * l, d_inner), out_w.transpose(1, 2)).view(two, n, l, -1)
    return torch.cat([x + out[0].to(x.dtype), x + out[1].to(x.dtype)], dim=-1)


def bidirectional_scan(scan: SSDFn, chunk_size: int) -> PairScan:
    """Any SSD backend as a ``PairScan``: the forward half as is, the backward half over flipped views."""

    def run(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> Tensor:
        m = x.shape[0] // 2
        Df, Db = (None, None) if D is None else (D[0], D[1])
        fwd = scan(x[:m], dt[:m], A[0], B[:m], C[:m], Df, chunk_size=chunk_size)
        flip = [t[m:].flip(1) for t in (x, dt, B, C)]
        bwd = scan(flip[0], flip[1], A[1], flip[2], flip[3], Db, chunk_size=chunk_size)
        assert isinstance(fwd, Tensor) and isinstance(bwd, Tensor)
        return torch.cat([fwd, bwd.flip(1)])

    return run


def pair_scan_of(scan: SSDFn, chunk_size: int) -> PairScan:
    """The backend's own both-directions form (attribute ``bidirectional``) if it has one, else the generic."""
    own = getattr(scan, "bidirectional", None)
    return own if own is not None else bidirectional_scan(scan, chunk_size)
