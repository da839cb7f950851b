"""Mamba2 inference on the CPU: the function of ``Mamba2.forward`` with fewer passes over memory.

Used by models built with the ``fast`` scan backend (the CPU default) when nothing needs autograd; the eager
``Mamba2.forward`` stays the reference (``tests/test_mamba2_cpu.py`` holds this path to it). What differs:

* one contiguous (n·l × d) input into in_proj, so its products are plain GEMMs (a strided 3-D input made
  ``matmul`` copy the weight once per sequence into a batched product), as three products: x‖B‖C, z with
  its SiLU fused, Δ;
* the causal depthwise convolution runs on the channels-last view of the projection's x‖B‖C columns (a 2-D
  convolution over a height-1 image in oneDNN's channels-last layout: no transposed copy in or out, and the
  output rows are contiguous), its SiLU fused;
* the products and the convolution go to oneDNN's fused kernels (``model.onednn``: float32 GEMMs there took
  less than half of MKL's time on an AMD CPU), with the plain ops as the fallback;
* under CPU autocast (bf16) the projections and the convolution run on weights converted once and kept
  (``onednn.prepared_weights``) instead of being cast per call, and nothing of the block is cast back and forth per op;
* the gated norm's weight is folded into out_proj's columns and its row scale applied to out_proj's output.

Precision under bf16, against the autocast reference: products and the gated norm's y·SiLU(z) in bf16; Δ, A,
the norm's statistics and row scale, and the scan's decays and carried states in float32 (the scan's own
choices, ``ssd_fast``). The bf16 output is about 1.1x as far from float32 as the reference's own bf16 run
(``tests/test_mamba2_cpu.py`` bounds it at 1.5x for the paper head layout).

Axis legend: n sequences, l length, c conv channels (x‖B‖C), h heads, p head dim, g groups, s state size.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model import onednn
from bsmamba2.model.mixers.ssd_fast import ssd_fast, ssd_fast_causal
from bsmamba2.model.mixers.ssd_types import SSDFn
from bsmamba2.model.norms import GatedRMSNorm

# The row count the GEMM weights are packed for: a pass's tokens (dualpath.CPU_INFERENCE_TOKENS); products of
# other sizes take the packed weights too.
PACK_ROWS = 4096


class Mamba2Like(Protocol):
    """What this path reads of a ``mamba2.Mamba2`` (structurally, so that neither module imports the other)."""

    d_inner: int
    headdim: int
    nheads: int
    ngroups: int
    d_state: int
    chunk_size: int
    scan: SSDFn
    in_proj: nn.Linear
    conv1d: nn.Conv1d
    dt_bias: nn.Parameter
    A_log: nn.Parameter
    D: nn.Parameter
    norm: GatedRMSNorm
    out_proj: nn.Linear


def applies(m: Mamba2Like, u: Tensor) -> bool:
    """True where this path runs: the ``fast`` scan, a CPU tensor, autograd off, and no tracer, compiler or
    exporter watching (they see the reference)."""
    if m.scan not in (ssd_fast, ssd_fast_causal) or u.device.type != "cpu" or torch.is_grad_enabled():
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def causal_scan(scan: SSDFn) -> SSDFn:
    """The scan of a causal time block: ``ssd_fast`` without factored decays (``ssd_fast_causal``: outputs
    bit-for-bit independent of later inputs), any other scan as it is."""
    return ssd_fast_causal if scan is ssd_fast else scan


def forward(m: Mamba2Like, u: Tensor) -> Tensor:
    """u (n, l, d) -> (n, l, d) in the compute dtype: ``Mamba2.forward`` laid out for the CPU."""
    d_inner, gn, h = m.d_inner, m.ngroups * m.d_state, m.nheads
    bias = m.conv1d.bias
    assert bias is not None  # built with bias=True
    conv_b: Tensor = bias

    def make() -> tuple[Tensor, ...]:
        # in_proj's rows as four products: x and B‖C (each convolution then reads and writes a contiguous
        # block, so the scan's elementwise passes over x run on whole rows), z (its SiLU fused) and Δ; the
        # conv kernels as height-1 2-D ones, out_proj's columns times the norm's weight
        w_z, w_x, w_bc, w_dt = m.in_proj.weight.split([d_inner, d_inner, 2 * gn, h])
        conv_wx, conv_wbc = m.conv1d.weight.unsqueeze(2).split([d_inner, 2 * gn])
        conv_bx, conv_bbc = conv_b.split([d_inner, 2 * gn])
        out_w = m.out_proj.weight * m.norm.weight
        conv = (conv_wx, conv_bx, conv_wbc, conv_bbc)
        return *(w.contiguous() for w in (w_x, w_bc, w_z, w_dt, *conv)), out_w

    def pack(ws: tuple[Tensor, ...]) -> tuple[Tensor, ...]:  # the GEMM weights in oneDNN's layout
        return *(onednn.pack(w, PACK_ROWS) for w in ws[:4]), *ws[4:8], onednn.pack(ws[8], PACK_ROWS)

    sources = (m.in_proj.weight, m.conv1d.weight, conv_b, m.out_proj.weight, m.norm.weight)
    prepared = onednn.prepared_weights(m, sources, onednn.compute_dtype(m.in_proj.weight), make, pack)
    in_x, in_bc, in_z, in_dt, conv_wx, conv_bx, conv_wbc, conv_bbc, out_w = prepared
    n, l, _ = u.shape
    with torch.autocast("cpu", enabled=False):  # the weights are already in the compute dtype
        u2 = u.to(in_x.dtype).reshape(n * l, -1)  # (n·l, d), contiguous
        x = conv_silu(onednn.linear(u2, in_x).view(n, l, d_inner), conv_wx, conv_bx)  # (n, l, d_inner)
        BC = conv_silu(onednn.linear(u2, in_bc).view(n, l, 2 * gn), conv_wbc, conv_bbc)  # (n, l, 2·g·s)
        gate = onednn.linear(u2, in_z, silu=True).view(n, l, d_inner)  # SiLU(z)
        dt = onednn.linear(u2, in_dt).view(n, l, h)
        acc = torch.promote_types(dt.dtype, torch.float32)  # Δ and A in (at least) float32, as mamba_ssm
        dt = F.softplus(dt.to(acc) + m.dt_bias.to(acc))  # (n, l, h)
        B, C = BC.split([gn, gn], dim=-1)
        y = m.scan(
            rearrange(x, "n l (h p) -> n l h p", p=m.headdim),
            dt,
            -torch.exp(m.A_log.to(acc)),
            rearrange(B, "n l (g s) -> n l g s", g=m.ngroups),
            rearrange(C, "n l (g s) -> n l g s", g=m.ngroups),
            m.D.to(acc),
            chunk_size=m.chunk_size,
        )
        assert isinstance(y, Tensor)
        return gated_norm_out(rearrange(y, "n l h p -> n l (h p)"), gate, out_w, m.norm.eps)


def conv_silu(xBC: Tensor, conv_w: Tensor, conv_b: Tensor) -> Tensor:
    """SiLU(causal depthwise conv) of xBC (n, l, c) (any row stride) with conv_w (c, 1, 1, K): (n, l, c).

    The official ``conv1d(padding=K-1)[..., :l]`` as a 2-D convolution of the (n, c, 1, l) view, which is
    channels-last in memory; oneDNN keeps that layout, so the output's (n, l, c) view has contiguous rows
    (SiLU fused into the convolution where ``onednn`` runs it, else in place)."""
    l, K, c = xBC.shape[1], conv_w.shape[-1], xBC.shape[-1]
    out = onednn.conv2d_silu(rearrange(xBC, "n l c -> n c 1 l"), conv_w, conv_b, (0, K - 1), c)
    return rearrange(out[..., :l], "n c 1 l -> n l c")


def gated_norm_out(y: Tensor, gate: Tensor, out_w: Tensor, eps: float) -> Tensor:
    """out_proj(``norms.gated_rms_norm``(y, z)) with gate = SiLU(z) and the norm's weight folded into out_w
    (d, d_inner): y, gate (n, l, d_inner) (y any row stride; gate contiguous, overwritten) -> (n, l, d) in
    out_w's dtype.

    The row scale (mean(g²) + eps)^(-½) is a scalar per row, so it is applied, in float32, to the d-wide
    product instead of the d_inner-wide g (one pass less over the big tensor). Under bf16, g = y·SiLU(z) is
    made in bf16 in the gate's memory and only its statistic is float32: the float32 copies of y, z and g
    cost more than the products around them (BENCHMARKS.md, session 6)."""
    n, l, d_inner = gate.shape
    if y.dtype == torch.bfloat16 and gate.dtype == torch.bfloat16:
        g = gate.mul_(y)  # (n, l, d_inner), bf16
        # accumulated in float32, rounded once to bf16 (a third of the time of asking for a float32 result)
        ss = torch.linalg.vector_norm(g, dim=-1, keepdim=True).float()  # (n, l, 1)
    else:  # float32 (or wider), like the reference
        g = gate.to(torch.promote_types(y.dtype, torch.float32)).mul_(y)
        ss = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    rstd = ss.square_().div_(d_inner).add_(eps).rsqrt_()  # (n, l, 1), float32 or wider
    out = onednn.linear(g.to(out_w.dtype).view(n * l, d_inner), out_w).view(n, l, -1)  # (n, l, d)
    return out.mul_(rstd) if out.dtype == rstd.dtype else out.to(rstd.dtype).mul_(rstd).to(out.dtype)
