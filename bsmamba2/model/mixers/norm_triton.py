"""The two RMS norms around each Mamba2 scan as one-pass Triton kernels, forward only (inference).

On the eager CUDA path each norm was a chain of memory-bound passes over its (n, l, d) input: the prenorm
(``norms.block_rms_norm``) about six (cast, square, mean, rsqrt, two products) plus autocast's cast for in_proj,
the gated norm (``norms.gated_rms_norm``) about ten. Here one program reads a block of rows once, keeps each
row (d ≤ ``norms.TRITON_NORM_MAX_D``) in registers, forms the statistics in float32 and writes the output once,
in the dtype the next matmul wants.

Axis legend: a row is one position of one sequence, the rows of an (..., d) tensor are its leading axes
flattened; a tensor is read as (outer, inner, d) with any outer and inner strides and unit stride along d,
so a column slice of the in_proj output (z) is read where it lies, without a copy.

No autograd: ``Mamba2.forward`` and ``PreNormBlock.forward`` call these only with autograd off
(``norms.triton_norm_applies``); training keeps the reference functions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from bsmamba2.model.norms import TRITON_NORM_MAX_D

# Row elements (padded to a power of two) per program, and its warps: 32 float32 values per thread.
ELEMENTS, WARPS = 4096, 4


@triton.jit
def _row_offsets(r, INNER, s_outer, s_inner):
    """Offsets of rows r of a tensor read as (outer, inner, d): r = outer index · INNER + inner index."""
    r = r.to(tl.int64)
    return (r // INNER) * s_outer + (r % INNER) * s_inner


@triton.jit
def _rms_kernel(
    x_ptr, w_ptr, o_ptr, ROWS, INNER, D, sx_o, sx_i, eps,
    BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BD)
    m = (r < ROWS)[:, None] & (c < D)[None, :]
    x = tl.load(x_ptr + _row_offsets(r, INNER, sx_o, sx_i)[:, None] + c[None, :], mask=m, other=0.0)
    x = x.to(tl.float32)
    w = tl.load(w_ptr + c, mask=c < D, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)  # (BR,): padded columns read 0, add nothing
    o = x * rstd[:, None] * w[None, :]
    out = r.to(tl.int64)[:, None] * D + c[None, :]  # the output is contiguous
    tl.store(o_ptr + out, o.to(o_ptr.dtype.element_ty), mask=m)


@triton.jit
def _gated_kernel(
    y_ptr, z_ptr, w_ptr, o_ptr, ROWS, INNER, D, sy_o, sy_i, sz_o, sz_i, eps,
    BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BD)
    m = (r < ROWS)[:, None] & (c < D)[None, :]
    y = tl.load(y_ptr + _row_offsets(r, INNER, sy_o, sy_i)[:, None] + c[None, :], mask=m, other=0.0)
    z = tl.load(z_ptr + _row_offsets(r, INNER, sz_o, sz_i)[:, None] + c[None, :], mask=m, other=0.0)
    z = z.to(tl.float32)
    g = y.to(tl.float32) * (z * tl.sigmoid(z))  # y · SiLU(z); padded columns: 0 · SiLU(0) = 0
    w = tl.load(w_ptr + c, mask=c < D, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=1) / D + eps)
    o = g * rstd[:, None] * w[None, :]
    out = r.to(tl.int64)[:, None] * D + c[None, :]
    tl.store(o_ptr + out, o.to(o_ptr.dtype.element_ty), mask=m)


def _as_rows(t: Tensor) -> tuple[Tensor, int, int, int]:
    """t (..., d) as (outer, inner, d) with unit stride along d (a view where the leading axes allow one, else a
    copy) -> (that tensor, inner, outer stride, inner stride)."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        t = t.contiguous()
    t3 = t.reshape(-1, t.shape[-2], t.shape[-1]) if t.dim() >= 2 else t.reshape(1, 1, -1)
    return t3, t3.shape[1], t3.stride(0), t3.stride(1)


def _launch_shape(rows: int, d: int) -> tuple[tuple[int], int, int]:
    """(grid, rows per program, padded row width) for ``rows`` rows of width d: ``ELEMENTS`` per program."""
    if not 0 < d <= TRITON_NORM_MAX_D:
        raise ValueError(f"Triton norms take rows of 1 to {TRITON_NORM_MAX_D} values, got {d}")
    bd = triton.next_power_of_2(d)
    br = max(1, ELEMENTS // bd)
    return (triton.cdiv(rows, br),), br, bd


def rms_norm(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """mamba_ssm's RMSNorm in one pass: x (..., d) float32/bf16/fp16, unit stride along d, weight (d,) ->
    x · (mean(x²) + eps)^(-½) · weight as (..., d) contiguous in ``out_dtype``, statistics in float32.

    Same function as ``norms.block_rms_norm(x, weight, eps).to(out_dtype)``; no autograd."""
    d = x.shape[-1]
    if weight.shape != (d,):
        raise ValueError(
            f"rms_norm: x{tuple(x.shape)} needs a weight of shape ({d},), got {tuple(weight.shape)}"
        )
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    rows = out.numel() // d if d else 0
    if rows == 0:
        return out
    grid, br, bd = _launch_shape(rows, d)
    x3, inner, s_o, s_i = _as_rows(x)
    _rms_kernel[grid](
        x3, weight.contiguous(), out, rows, inner, d, s_o, s_i, eps, BR=br, BD=bd, num_warps=WARPS
    )
    return out


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, eps: float) -> Tensor:
    """mamba_ssm's gated RMSNorm (norm_before_gate=False, one group) in one pass: y, z (..., d) with unit stride
    along d (z may be a column slice of a wider tensor: read in place), weight (d,) ->
    g · (mean(g²) + eps)^(-½) · weight, g = y · SiLU(z), as (..., d) contiguous in y's dtype, in float32.

    Same function as ``norms.gated_rms_norm``; no autograd."""
    d = y.shape[-1]
    if z.shape != y.shape or weight.shape != (d,):
        raise ValueError(
            f"gated_rms_norm: y{tuple(y.shape)} needs z of the same shape and a weight ({d},); "
            f"got z{tuple(z.shape)} weight{tuple(weight.shape)}"
        )
    out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    rows = out.numel() // d if d else 0
    if rows == 0:
        return out
    grid, br, bd = _launch_shape(rows, d)
    y3, inner, sy_o, sy_i = _as_rows(y)
    z3, _, sz_o, sz_i = _as_rows(z)  # the same shape as y's, so the same (outer, inner) split
    _gated_kernel[grid](
        y3, z3, weight.contiguous(), out, rows, inner, d, sy_o, sy_i, sz_o, sz_i, eps,
        BR=br, BD=bd, num_warps=WARPS,
    )  # fmt: skip
    return out
