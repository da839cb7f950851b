"""Depthwise causal conv + SiLU of Mamba2's x‖B‖C channels in Triton, forward and backward, with a direction
per sequence: the Triton form of ``mamba2_pair.directional_conv_silu`` on a stacked batch.

Axis legend: N sequences (the first NSEQ scanned forward, the rest backward when there are two directions),
l steps, ch channels, K taps. Direction 0: out_t = b + Σ_k w_k·x_{t−(K−1)+k} (causal); direction 1:
out_t = b + Σ_k w_k·x_{t+(K−1)−k} (the causal conv of the flipped sequence, flipped back); zeros outside the
sequence; y = SiLU(out) in x's dtype, sums in float32.

The backward saves nothing but the inputs: one kernel recomputes out, forms d_out = dy·SiLU'(out) (float32
scratch) and accumulates dw, db (float32 atomics per tile); a second sums dx from d_out at the shifted rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BL, BC = 32, 64  # tile: steps × channels per program


@triton.jit
def _src_rows(t, k, di, K: tl.constexpr):
    """Rows read by tap k for output rows t: causal for direction 0, anti-causal for direction 1."""
    return tl.where(di == 0, t - (K - 1) + k, t + (K - 1) - k)


@triton.jit
def _conv_acc(
    x_base, w_base, b_base, t, cc, L, CH, sx_l, di, K: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr
):
    cm = cc < CH
    acc = (
        tl.zeros((BL, BC), dtype=tl.float32)
        + tl.load(b_base + cc, mask=cm, other=0.0).to(tl.float32)[None, :]
    )
    for k in tl.static_range(K):
        s = _src_rows(t, k, di, K)
        m = ((s >= 0) & (s < L))[:, None] & cm[None, :]
        xv = tl.load(x_base + s[:, None] * sx_l + cc[None, :], mask=m, other=0.0).to(tl.float32)
        acc += xv * tl.load(w_base + cc * K + k, mask=cm, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, L, CH, NSEQ, sx_n, sx_l,
    K: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BL + tl.arange(0, BL)
    cc = tl.program_id(2) * BC + tl.arange(0, BC)
    di = (n // NSEQ).to(tl.int32)
    acc = _conv_acc(x_ptr + n * sx_n, w_ptr + di * CH * K, b_ptr + di * CH, t, cc, L, CH, sx_l, di, K, BL, BC)
    y = acc * tl.sigmoid(acc)
    m = (t < L)[:, None] & (cc < CH)[None, :]
    tl.store(y_ptr + n * L * CH + t[:, None] * CH + cc[None, :], y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_act_kernel(
    x_ptr, w_ptr, b_ptr, dy_ptr, dacc_ptr, dw_ptr, db_ptr, L, CH, NSEQ, sx_n, sx_l, sdy_n, sdy_l,
    K: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """d_out = dy·SiLU'(out) (recomputed out) into a float32 (N, l, ch) scratch; dw, db partial sums."""
    n = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BL + tl.arange(0, BL)
    cc = tl.program_id(2) * BC + tl.arange(0, BC)
    di = (n // NSEQ).to(tl.int32)
    cm = cc < CH
    x_base = x_ptr + n * sx_n
    acc = _conv_acc(x_base, w_ptr + di * CH * K, b_ptr + di * CH, t, cc, L, CH, sx_l, di, K, BL, BC)
    m = (t < L)[:, None] & cm[None, :]
    dy = tl.load(dy_ptr + n * sdy_n + t[:, None] * sdy_l + cc[None, :], mask=m, other=0.0).to(tl.float32)
    sg = tl.sigmoid(acc)
    da = tl.where(m, dy * sg * (1.0 + acc * (1.0 - sg)), 0.0)
    tl.store(dacc_ptr + n * L * CH + t[:, None] * CH + cc[None, :], da, mask=m)
    tl.atomic_add(db_ptr + di * CH + cc, tl.sum(da, axis=0), mask=cm, sem="relaxed")
    for k in tl.static_range(K):
        s = _src_rows(t, k, di, K)
        ms = ((s >= 0) & (s < L))[:, None] & cm[None, :]
        xv = tl.load(x_base + s[:, None] * sx_l + cc[None, :], mask=ms, other=0.0).to(tl.float32)
        tl.atomic_add(dw_ptr + di * CH * K + cc * K + k, tl.sum(da * xv, axis=0), mask=cm, sem="relaxed")


@triton.jit
def _bwd_x_kernel(
    dacc_ptr, w_ptr, dx_ptr, L, CH, NSEQ, sd_n, sd_l,
    K: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """dx_s = Σ_k w_k·d_out_t over the output rows t that read row s through tap k; d_out (N, L, CH)
    contiguous float32, dx written at strides (sd_n, sd_l, 1) (a view, e.g. columns of a wider gradient)."""
    n = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1) * BL + tl.arange(0, BL)
    cc = tl.program_id(2) * BC + tl.arange(0, BC)
    di = (n // NSEQ).to(tl.int32)
    cm = cc < CH
    dx = tl.zeros((BL, BC), dtype=tl.float32)
    for k in tl.static_range(K):
        t = tl.where(di == 0, s + (K - 1) - k, s - (K - 1) + k)  # inverse of _src_rows
        m = ((t >= 0) & (t < L))[:, None] & cm[None, :]
        da = tl.load(dacc_ptr + n * L * CH + t[:, None] * CH + cc[None, :], mask=m, other=0.0)
        dx += da * tl.load(w_ptr + di * CH * K + cc * K + k, mask=cm, other=0.0).to(tl.float32)[None, :]
    m = (s < L)[:, None] & cm[None, :]
    tl.store(dx_ptr + n * sd_n + s[:, None] * sd_l + cc[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, w: Tensor, b: Tensor, nseq: int
    ) -> Tensor:
        N, L, CH = x.shape
        K = w.shape[-1]
        y = torch.empty(N, L, CH, dtype=x.dtype, device=x.device)
        grid = (N, triton.cdiv(L, BL), triton.cdiv(CH, BC))
        _fwd_kernel[grid](x, w, b, y, L, CH, nseq, x.stride(0), x.stride(1), K=K, BL=BL, BC=BC)
        ctx.save_for_backward(x, w, b)
        ctx.nseq = nseq  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, dy: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None]:
        x, w, b = ctx.saved_tensors  # type: ignore[attr-defined]
        N, L, CH = x.shape
        K = w.shape[-1]
        if dy.stride(-1) != 1:
            dy = dy.contiguous()
        dacc = torch.empty(N, L, CH, dtype=torch.float32, device=x.device)
        dw = torch.zeros(w.shape, dtype=torch.float32, device=x.device)
        db = torch.zeros(b.shape, dtype=torch.float32, device=x.device)
        dx = torch.empty(N, L, CH, dtype=x.dtype, device=x.device)
        grid = (N, triton.cdiv(L, BL), triton.cdiv(CH, BC))
        nseq = ctx.nseq  # type: ignore[attr-defined]
        _bwd_act_kernel[grid](
            x, w, b, dy, dacc, dw, db, L, CH, nseq, x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
            K=K, BL=BL, BC=BC,
        )  # fmt: skip
        _bwd_x_kernel[grid](dacc, w, dx, L, CH, nseq, L * CH, CH, K=K, BL=BL, BC=BC)
        return dx, dw.to(w.dtype), db.to(b.dtype), None


def conv_silu(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """SiLU(depthwise conv) per direction, in Triton. x (ndir, n, l, ch) with unit channel stride (a view of
    the in_proj output is fine), w (ndir, ch, K), b (ndir, ch); ndir 1 (causal) or 2 (the second causal along
    the reversed sequence) -> (ndir, n, l, ch) contiguous, x's dtype. Same function as
    ``mamba2_pair.directional_conv_silu`` for ndir = 2."""
    ndir, n, l, ch = x.shape
    if w.shape[:2] != (ndir, ch) or b.shape != (ndir, ch) or x.stride(-1) != 1 or ndir not in (1, 2):
        raise ValueError(
            f"conv_silu: x{tuple(x.shape)} (unit channel stride) w{tuple(w.shape)} b{tuple(b.shape)}"
        )
    xs = x.reshape(ndir * n, l, ch)  # a view for a slice of the in_proj output; copied only if it must be
    y = _ConvSiLU.apply(xs, w.contiguous(), b.contiguous(), n)
    return y.view(ndir, n, l, ch)
