"""Mamba2 inference on the CPU: the function of ``Mamba2.forward`` with fewer passes over memory.

Used by models built with the ``fast`` scan backend (the CPU default) when nothing needs autograd; the eager
``Mamba2.forward`` stays the reference (``tests/test_mamba2_cpu.py`` holds this path to it). What differs:

* one contiguous (n·l × d) input into in_proj, so its products are plain GEMMs (a strided 3-D input made
  ``matmul`` copy the weight once per sequence into a batched product), x‖B‖C apart from z‖Δ;
* the causal depthwise convolution runs on the channels-last view of the projection's x‖B‖C columns (a 2-D
  convolution over a height-1 image in oneDNN's channels-last layout: no transposed copy in or out, and the
  output rows are contiguous, so SiLU runs in place on them);
* under CPU autocast (bf16) the projections and the convolution run on weights converted once and kept
  (``prepared_weights``) instead of being cast per call, and nothing of the block is cast back and forth per op.

Precision under bf16 as the autocast reference: products in bf16, Δ, A, the norm statistics and the scan's
decays and states in float32 (the scan's own choices, ``ssd_fast``).

Axis legend: n sequences, l length, c conv channels (x‖B‖C), h heads, p head dim, g groups, s state size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.mixers.ssd_fast import ssd_fast, ssd_fast_causal
from bsmamba2.model.mixers.ssd_types import SSDFn
from bsmamba2.model.norms import GatedRMSNorm


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


def compute_dtype(weight: Tensor) -> torch.dtype:
    """The dtype the projections run in: CPU autocast's when it is on, else the weight's."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return weight.dtype


def prepared_weights(
    owner: object, sources: tuple[Tensor, ...], dtype: torch.dtype, make: Callable[[], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """``make()``'s tensors (weights derived from ``sources``) in ``dtype``, made once and kept on ``owner``
    until one of the sources changes (an in-place update bumps its version, a new tensor its address) or
    another dtype is asked for. A plain attribute, never a buffer: nothing of it enters a state dict."""
    key = (dtype, *((t.data_ptr(), t._version) for t in sources))
    cached = owner.__dict__.get("_cpu_weights")
    if cached is None or cached[0] != key:
        cached = (key, tuple(w.detach().to(dtype) for w in make()))
        owner.__dict__["_cpu_weights"] = cached
    return cached[1]


def forward(m: Mamba2Like, u: Tensor) -> Tensor:
    """u (n, l, d) -> (n, l, d) in the compute dtype: ``Mamba2.forward`` laid out for the CPU."""
    d_inner, gn, h = m.d_inner, m.ngroups * m.d_state, m.nheads
    bias = m.conv1d.bias
    assert bias is not None  # built with bias=True
    conv_b: Tensor = bias

    def make() -> tuple[Tensor, ...]:
        # in_proj's x‖B‖C rows apart from its z‖Δ rows (the convolution then reads a contiguous product),
        # the conv kernel as a height-1 2-D one, out_proj's columns times the gated norm's weight
        w_z, w_xbc, w_dt = m.in_proj.weight.split([d_inner, d_inner + 2 * gn, h])
        conv_w = m.conv1d.weight.unsqueeze(2)
        return w_xbc.contiguous(), torch.cat([w_z, w_dt]), conv_w, conv_b, m.out_proj.weight * m.norm.weight

    sources = (m.in_proj.weight, m.conv1d.weight, conv_b, m.out_proj.weight, m.norm.weight)
    prepared = prepared_weights(m, sources, compute_dtype(m.in_proj.weight), make)
    in_xbc, in_zdt, conv_w, conv_b, out_w = prepared
    with torch.autocast("cpu", enabled=False):  # the weights are already in the compute dtype
        u = u.to(in_xbc.dtype).contiguous()
        xBC = conv_silu(F.linear(u, in_xbc), conv_w, conv_b)  # (n, l, c), rows contiguous
        z, dt = F.linear(u, in_zdt).split([d_inner, h], dim=-1)  # (n, l, d_inner), (n, l, h)
        acc = torch.promote_types(dt.dtype, torch.float32)  # Δ and A in (at least) float32, as mamba_ssm
        dt = F.softplus(dt.to(acc) + m.dt_bias.to(acc))  # (n, l, h)
        x, B, C = xBC.split([d_inner, gn, gn], dim=-1)
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
        g = gated_norm(rearrange(y, "n l h p -> n l (h p)"), z, m.norm.eps)
        return F.linear(g.to(out_w.dtype), out_w)


def conv_silu(xBC: Tensor, conv_w: Tensor, conv_b: Tensor) -> Tensor:
    """SiLU(causal depthwise conv) of xBC (n, l, c) (any row stride) with conv_w (c, 1, 1, K): (n, l, c).

    The official ``conv1d(padding=K-1)[..., :l]`` as a 2-D convolution of the (n, c, 1, l) view, which is
    channels-last in memory; oneDNN keeps that layout, so the output's (n, l, c) view has contiguous rows."""
    l, K = xBC.shape[1], conv_w.shape[-1]
    out = F.conv2d(
        rearrange(xBC, "n l c -> n c 1 l"), conv_w, conv_b, padding=(0, K - 1), groups=xBC.shape[-1]
    )
    return F.silu(rearrange(out[..., :l], "n c 1 l -> n l c"), inplace=True)


def gated_norm(y: Tensor, z: Tensor, eps: float) -> Tensor:
    """``norms.gated_rms_norm`` without its weight (folded into out_proj's): y, z (n, l, d_inner) -> y's dtype.

    In float32 (or wider) like the reference; in bf16 not faster on the CPU here, where elementwise passes
    cost what their count does, and less accurate."""
    acc = torch.promote_types(y.dtype, torch.float32)
    g = F.silu(z.to(acc), inplace=True).mul_(y)  # (n, l, d_inner)
    ms = torch.linalg.vector_norm(g, dim=-1, keepdim=True).square_().div_(g.shape[-1])  # mean of g²
    return g.mul_(ms.add_(eps).rsqrt_()).to(y.dtype)
