"""The bidirectional Mamba2 block as one autograd Function over Triton kernels and cuBLAS products (issue 13).

``KernelMamba2Block`` computes the official bidirectional block (``dualpath.BidirectionalBlock`` of two prenorm
Mamba2 blocks; the eager modules are the specification, tests/test_mixer_triton*.py compare them) with both
directions stacked along a leading axis (axis legend: two = direction, 0 forward and 1 backward; n sequences,
l steps, M = n·l rows per direction, d model dim, E = in_proj width, ch = x‖B‖C channels, DI = d_inner, h
heads, p head dim). The backward direction is reversed indexing (an anti-causal convolution, a scan from the
last step back), never a flipped copy. Per call:

    prenorm (float32) → u (2, M, d) → in_proj, one batched GEMM → zxbcdt (2, M, E)
    → conv + SiLU kernel on the xBC columns, read in place → xBC (2n, l, ch);  Δ = softplus(dt + dt_bias)
    → SSD (``ssd_triton``'s kernels, both directions in one launch) → y (2n, l, h, p)
    → gated RMSNorm kernel, z read in place in zxbcdt → g (2, M, DI) → out_proj, one batched GEMM → + x

The backward is written out by hand, so nothing is replayed that is not needed and every d_inner-wide
gradient is written once, where the next product reads it: the gated-norm kernel writes dz straight into the
z columns of d zxbcdt and returns g recomputed for out_proj's weight gradient; the conv kernels read the
SSD's dx, dB, dC where they lie, recompute the convolution, reduce its weight and bias gradients in registers
over whole sequences, and write d xBC into the xBC columns of d zxbcdt; the in_proj gradients are then one GEMM
each over d zxbcdt, and one kernel takes the shared prenorm's backward and both blocks' residual.

What the forward keeps for the backward (``KernelMamba2Block.save``):
* ``"all"``: zxbcdt, the activated xBC, Δ and y (about 2·(E + ch + DI) values per row in the GEMM dtype);
* ``"input"``: only x; the backward recomputes the prenorm, in_proj, conv and SSD forward (not the gated norm
  or out_proj). This replaces the dual path's activation checkpointing (``SeparatorNet.recompute``), which
  would replay the whole block: with these blocks, leave that off.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from bsmamba2.model.dualpath import BidirectionalBlock
from bsmamba2.model.mixers import ssd_triton
from bsmamba2.model.mixers.conv_triton import _bwd_x_kernel, _conv_acc, _fwd_kernel
from bsmamba2.model.norms import TRITON_NORM_MAX_D

SAVE_MODES = ("all", "input")
CALLS = [0]  # forwards of the Function in this process: benchmarks check that their kernel rows ran it
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Gated norm: row elements (padded to a power of two) per program slice, and warps; the backward holds ~8 row
# tensors live, so it takes half the forward's rows.
NORM_ELEMENTS_FWD, NORM_ELEMENTS_BWD, NORM_WARPS = 4096, 2048, 4
NORM_BLOCKS_PER_PROGRAM = 16  # row slices per backward program: its weight-gradient partial covers them all
# Conv kernels' launch shapes: (steps per tile BL, channels per tile BC, warps[, work tiles per program]);
# ``BSMAMBA2_MIXER_TILES`` (a JSON object with any of these keys) replaces them, for benchmarks' sweeps
# (benchmarks/bench_mixer.py). The backward's first pass reduces dw over a program's tiles in registers.
# The fastest of bench_mixer's sweep on an H200 (2026-12-02, paper shapes, bf16, both paths summed): forward
# 2.16 ms against 3.75 for (32, 64, 4); backward 18.7 against 20.0 ms (BENCHMARKS.md, session 12).
CONV_TILES: dict[str, tuple[int, ...]] = {
    "conv_fwd": (32, 128, 4),
    "conv_dact": (32, 128, 4, 8),
    "conv_dx": (32, 128, 4),
}


def _tiles_from_env() -> None:
    raw = os.environ.get("BSMAMBA2_MIXER_TILES")
    if not raw:
        return
    try:
        for name, cfg in json.loads(raw).items():
            if name not in CONV_TILES or len(cfg) != len(CONV_TILES[name]):
                raise KeyError(name)
            CONV_TILES[name] = tuple(int(v) for v in cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"BSMAMBA2_MIXER_TILES is not valid ({e!r}): {raw!r}") from None


_tiles_from_env()


# ---- gated RMSNorm over stacked directions -----------------------------------------------------------------
@triton.jit
def _gated_fwd_kernel(
    y_ptr, z_ptr, w_ptr, g_ptr, ROWS, M, D, sy, sz, sg, eps,
    BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """g = s·rstd·w[direction], s = y·SiLU(z), rstd = (mean(s²) + eps)^(-½), for rows r (direction r // M)."""
    r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
    c = tl.arange(0, BD)
    m = (r < ROWS)[:, None] & (c < D)[None, :]
    y = tl.load(y_ptr + r[:, None] * sy + c[None, :], mask=m, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + r[:, None] * sz + c[None, :], mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + (r // M)[:, None] * D + c[None, :], mask=m, other=0.0).to(tl.float32)
    s = y * (z * tl.sigmoid(z))
    rstd = 1.0 / tl.sqrt(tl.sum(s * s, axis=1) / D + eps)
    tl.store(g_ptr + r[:, None] * sg + c[None, :], (s * rstd[:, None] * w).to(g_ptr.dtype.element_ty), mask=m)


@triton.jit
def _gated_bwd_kernel(
    y_ptr, z_ptr, do_ptr, w_ptr, dy_ptr, dz_ptr, g_ptr, dwp_ptr,
    M, D, NPD, sy, sz, sdo, sdy, sdz, sg, eps,
    NB: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """From d g (``do``): dy, dz, g (recomputed, for out_proj's weight gradient) and this program's partial of
    d w, over NB slices of BR rows of one direction.

    With o = w·s·r, r = (mean(s²) + eps)^(-½): ds = r·(w·do) − r³·s·mean(w·do·s); dy = ds·SiLU(z),
    dz = ds·y·SiLU'(z), SiLU'(z) = σ(z)·(1 + z·(1 − σ(z))); dw = Σ_rows do·s·r."""
    pid = tl.program_id(0)
    di = pid // NPD
    c = tl.arange(0, BD)
    cm = c < D
    w = tl.load(w_ptr + di * D + c, mask=cm, other=0.0).to(tl.float32)
    dw = tl.zeros((BD,), dtype=tl.float32)
    for i in range(NB):
        rl = ((pid % NPD) * NB + i) * BR + tl.arange(0, BR)  # rows within the direction
        r = (di * M + rl).to(tl.int64)
        m = (rl < M)[:, None] & cm[None, :]
        y = tl.load(y_ptr + r[:, None] * sy + c[None, :], mask=m, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + r[:, None] * sz + c[None, :], mask=m, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + r[:, None] * sdo + c[None, :], mask=m, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        silu = z * sig
        s = y * silu
        rstd = 1.0 / tl.sqrt(tl.sum(s * s, axis=1) / D + eps)
        dow = do * w[None, :]
        proj = tl.sum(dow * s, axis=1) / D
        ds = rstd[:, None] * dow - (rstd * rstd * rstd * proj)[:, None] * s
        tl.store(dy_ptr + r[:, None] * sdy + c[None, :], (ds * silu).to(dy_ptr.dtype.element_ty), mask=m)
        dz = ds * y * sig * (1.0 + z * (1.0 - sig))
        tl.store(dz_ptr + r[:, None] * sdz + c[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m)
        sr = s * rstd[:, None]
        tl.store(g_ptr + r[:, None] * sg + c[None, :], (sr * w[None, :]).to(g_ptr.dtype.element_ty), mask=m)
        dw += tl.sum(do * sr, axis=0)
    tl.store(dwp_ptr + pid * D + c, dw, mask=cm)


def _norm_shape(d: int, elements: int) -> tuple[int, int]:
    if not 0 < d <= TRITON_NORM_MAX_D:
        raise ValueError(
            f"the fused mixer's gated norm takes rows of 1 to {TRITON_NORM_MAX_D} values, got {d}"
        )
    bd = triton.next_power_of_2(d)
    return max(1, elements // bd), bd


def gated_norm_fwd(y: Tensor, z: Tensor, w: Tensor, eps: float) -> Tensor:
    """y (R, DI) and z (R, DI) with unit column stride (any row stride), w (2, DI), rows r of direction r // M,
    M = R // 2 -> g (R, DI) contiguous in y's dtype: ``norms.gated_rms_norm`` per direction."""
    R, D = y.shape
    br, bd = _norm_shape(D, NORM_ELEMENTS_FWD)
    g = torch.empty(R, D, dtype=y.dtype, device=y.device)
    _gated_fwd_kernel[(triton.cdiv(R, br),)](
        y, z, w, g, R, R // 2, D, y.stride(0), z.stride(0), g.stride(0), eps,
        BR=br, BD=bd, num_warps=NORM_WARPS,
    )  # fmt: skip
    return g


def gated_norm_bwd(
    y: Tensor, z: Tensor, do: Tensor, w: Tensor, eps: float, dy: Tensor, dz: Tensor
) -> tuple[Tensor, Tensor]:
    """The gated norm's backward for ``gated_norm_fwd``'s rows: writes dy and dz (views with unit column stride,
    dz may be the z columns of d zxbcdt) and returns (g recomputed (R, DI), dw (2, DI) float32)."""
    R, D = y.shape
    M = R // 2
    br, bd = _norm_shape(D, NORM_ELEMENTS_BWD)
    nb = max(1, min(NORM_BLOCKS_PER_PROGRAM, triton.cdiv(M, br)))
    npd = triton.cdiv(M, nb * br)  # programs per direction
    g = torch.empty(R, D, dtype=y.dtype, device=y.device)
    dwp = torch.empty(2 * npd, D, dtype=torch.float32, device=y.device)
    _gated_bwd_kernel[(2 * npd,)](
        y, z, do, w, dy, dz, g, dwp, M, D, npd,
        y.stride(0), z.stride(0), do.stride(0), dy.stride(0), dz.stride(0), g.stride(0), eps,
        NB=nb, BR=br, BD=bd, num_warps=NORM_WARPS,
    )  # fmt: skip
    return g, dwp.view(2, npd, D).sum(1)


# ---- conv + SiLU backward, reading the SSD's gradients in place ---------------------------------------------
@triton.jit
def _load_dxbc(gx_ptr, gb_ptr, gc_ptr, n, t, tm, cc, DI, GN, CH, sgx_n, sgx_l, sgb_n, sgb_l):
    """d xBC (after the SiLU) at rows t: channels [0, DI) from the SSD's dx, then dB, then dC."""
    row = tm[:, None]
    mx = row & (cc < DI)[None, :]
    mb = row & ((cc >= DI) & (cc < DI + GN))[None, :]
    mc = row & ((cc >= DI + GN) & (cc < CH))[None, :]
    v = tl.load(gx_ptr + n * sgx_n + t[:, None] * sgx_l + cc[None, :], mask=mx, other=0.0).to(tl.float32)
    off_b = n * sgb_n + t[:, None] * sgb_l
    v += tl.load(gb_ptr + off_b + (cc - DI)[None, :], mask=mb, other=0.0).to(tl.float32)
    v += tl.load(gc_ptr + off_b + (cc - DI - GN)[None, :], mask=mc, other=0.0).to(tl.float32)
    return v


@triton.jit
def _conv_dact_kernel(
    x_ptr, w_ptr, b_ptr, gx_ptr, gb_ptr, gc_ptr, da_ptr, dw_ptr, db_ptr,
    L, CH, DI, GN, NSEQ, NLT, PPD, sx_n, sx_l, sgx_n, sgx_l, sgb_n, sgb_l,
    TPP: tl.constexpr, K: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """Pass 1 for TPP (sequence, step-tile) work items of one direction (items numbered sequence-major, NLT
    step tiles per sequence, PPD programs per direction) and a tile of channels: d out_t = dxbc_t·SiLU'(out_t)
    (out recomputed) into a float32 (2n, l, ch) scratch; dw_k = Σ_t d out_t·x_src(t,k) and db summed in
    registers over the program's items, one atomic add per channel at the end."""
    di = tl.program_id(0) // PPD
    pw = tl.program_id(0) % PPD
    cc = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = cc < CH
    w_base = w_ptr + di * CH * K
    b_base = b_ptr + di * CH
    kk = tl.arange(0, 4)  # tap index of the dw accumulator's columns (K ≤ 4)
    tl.static_assert(K <= 4, "d_conv up to 4")
    db = tl.zeros((BC,), dtype=tl.float32)
    dw = tl.zeros((BC, 4), dtype=tl.float32)
    for i in range(TPP):
        item = pw * TPP + i
        if item < NSEQ * NLT:
            n = (di * NSEQ + item // NLT).to(tl.int64)
            x_base = x_ptr + n * sx_n
            t = (item % NLT) * BL + tl.arange(0, BL)
            tm = t < L
            acc = _conv_acc(x_base, w_base, b_base, t, cc, L, CH, sx_l, di, K, BL, BC)
            g = _load_dxbc(gx_ptr, gb_ptr, gc_ptr, n, t, tm, cc, DI, GN, CH, sgx_n, sgx_l, sgb_n, sgb_l)
            sg = tl.sigmoid(acc)
            m = tm[:, None] & cm[None, :]
            da = tl.where(m, g * sg * (1.0 + acc * (1.0 - sg)), 0.0)
            tl.store(da_ptr + n * L * CH + t[:, None] * CH + cc[None, :], da, mask=m)
            db += tl.sum(da, axis=0)
            for k in tl.static_range(K):
                src = tl.where(di == 0, t - (K - 1) + k, t + (K - 1) - k)
                ms = ((src >= 0) & (src < L))[:, None] & cm[None, :]
                xv = tl.load(x_base + src[:, None] * sx_l + cc[None, :], mask=ms, other=0.0)
                part = tl.sum(da * xv.to(tl.float32), axis=0)  # (BC,)
                dw += tl.where(kk[None, :] == k, part[:, None], 0.0)
    tl.atomic_add(db_ptr + di * CH + cc, db, mask=cm, sem="relaxed")
    dwm = cm[:, None] & (kk < K)[None, :]
    tl.atomic_add(dw_ptr + di * CH * K + cc[:, None] * K + kk[None, :], dw, mask=dwm, sem="relaxed")


def conv_fwd(x: Tensor, w: Tensor, b: Tensor, nseq: int) -> Tensor:
    """SiLU(conv) per direction: x (2n, l, ch) with unit channel stride (a view of zxbcdt), w (2, ch, K),
    b (2, ch) -> (2n, l, ch) contiguous in x's dtype (``conv_triton``'s forward kernel)."""
    N, L, CH = x.shape
    K = w.shape[-1]
    y = torch.empty(N, L, CH, dtype=x.dtype, device=x.device)
    bl, bc, warps = CONV_TILES["conv_fwd"]
    grid = (N, triton.cdiv(L, bl), triton.cdiv(CH, bc))
    _fwd_kernel[grid](
        x, w, b, y, L, CH, nseq, x.stride(0), x.stride(1), K=K, BL=bl, BC=bc, **_warps(warps)
    )  # fmt: skip
    return y


def _warps(n: int) -> dict[str, int]:
    return {} if _INTERPRET else {"num_warps": n}


def conv_bwd(
    x: Tensor, w: Tensor, b: Tensor, gx: Tensor, gb: Tensor, gc: Tensor, dx: Tensor, nseq: int
) -> tuple[Tensor, Tensor]:
    """Backward of ``conv_fwd`` from d xBC given in three pieces, gx (2n, l, DI) ‖ gb, gc (2n, l, g·N) (each
    with unit channel stride); writes dx (2n, l, ch), a view, and returns (dw (2, ch, K), db (2, ch)) float32.
    Two passes through a float32 scratch of d out: one per (sequences, channel tile) program that also reduces
    dw and db, then one per tile that gathers dx from the shifted rows."""
    N, L, CH = x.shape
    K = w.shape[-1]
    DI, GN = gx.shape[-1], gb.shape[-1]
    if DI + 2 * GN != CH or gc.stride() != gb.stride() or K > 4:
        raise ValueError(
            f"conv_bwd: pieces {DI} + 2·{GN} for {CH} channels, strides {gb.stride()} {gc.stride()}, K {K}"
        )
    bl, bc, warps, tpp = CONV_TILES["conv_dact"]
    nlt = triton.cdiv(L, bl)
    ppd = triton.cdiv(nseq * nlt, tpp)  # programs per direction
    dw = torch.zeros(w.shape, dtype=torch.float32, device=x.device)
    db = torch.zeros(b.shape, dtype=torch.float32, device=x.device)
    da = torch.empty(N, L, CH, dtype=torch.float32, device=x.device)
    _conv_dact_kernel[(2 * ppd, triton.cdiv(CH, bc))](
        x, w, b, gx, gb, gc, da, dw, db, L, CH, DI, GN, nseq, nlt, ppd,
        x.stride(0), x.stride(1), gx.stride(0), gx.stride(1), gb.stride(0), gb.stride(1),
        TPP=tpp, K=K, BL=bl, BC=bc, **_warps(warps),
    )  # fmt: skip
    bl, bc, warps = CONV_TILES["conv_dx"]
    _bwd_x_kernel[(N, triton.cdiv(L, bl), triton.cdiv(CH, bc))](
        da, w, dx, L, CH, nseq, dx.stride(0), dx.stride(1), K=K, BL=bl, BC=bc, **_warps(warps)
    )
    return dw, db


# ---- the shared prenorm of both directions -------------------------------------------------------------------
@triton.jit
def _prenorm_fwd_kernel(
    x_ptr, w_ptr, u_ptr, M, D, sx, eps, BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """u[k] = x·rstd·w[k] for both directions k, rstd = (mean(x²) + eps)^(-½) in float32; u (2, M, D)."""
    r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
    c = tl.arange(0, BD)
    cm = c < D
    m = (r < M)[:, None] & cm[None, :]
    x = tl.load(x_ptr + r[:, None] * sx + c[None, :], mask=m, other=0.0).to(tl.float32)
    xn = x * (1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps))[:, None]
    w0 = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + D + c, mask=cm, other=0.0).to(tl.float32)
    out = r[:, None] * D + c[None, :]
    tl.store(u_ptr + out, (xn * w0[None, :]).to(u_ptr.dtype.element_ty), mask=m)
    tl.store(u_ptr + M * D + out, (xn * w1[None, :]).to(u_ptr.dtype.element_ty), mask=m)


@triton.jit
def _prenorm_bwd_kernel(
    x_ptr, w_ptr, du_ptr, dres_ptr, dx_ptr, dwp_ptr, M, D, sx, eps,
    NB: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """dx = dres[0] + dres[1] + rstd·(dxn − xn·mean(dxn·xn)), dxn = Σ_k du[k]·w[k]; this program's partials of
    dw[k] = Σ_rows du[k]·xn. du, dres (2, M, D) contiguous; dx (M, D) contiguous in x's dtype."""
    pid = tl.program_id(0)
    c = tl.arange(0, BD)
    cm = c < D
    w0 = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + D + c, mask=cm, other=0.0).to(tl.float32)
    dw0 = tl.zeros((BD,), dtype=tl.float32)
    dw1 = tl.zeros((BD,), dtype=tl.float32)
    for i in range(NB):
        r = ((pid * NB + i) * BR + tl.arange(0, BR)).to(tl.int64)
        m = (r < M)[:, None] & cm[None, :]
        x = tl.load(x_ptr + r[:, None] * sx + c[None, :], mask=m, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
        xn = x * rstd[:, None]
        off = r[:, None] * D + c[None, :]
        du0 = tl.load(du_ptr + off, mask=m, other=0.0).to(tl.float32)
        du1 = tl.load(du_ptr + M * D + off, mask=m, other=0.0).to(tl.float32)
        dw0 += tl.sum(du0 * xn, axis=0)
        dw1 += tl.sum(du1 * xn, axis=0)
        dxn = du0 * w0[None, :] + du1 * w1[None, :]
        proj = tl.sum(dxn * xn, axis=1) / D
        dx = rstd[:, None] * (dxn - xn * proj[:, None])
        dx += tl.load(dres_ptr + off, mask=m, other=0.0).to(tl.float32)
        dx += tl.load(dres_ptr + M * D + off, mask=m, other=0.0).to(tl.float32)
        tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=m)
    tl.store(dwp_ptr + pid * 2 * D + c, dw0, mask=cm)
    tl.store(dwp_ptr + pid * 2 * D + D + c, dw1, mask=cm)


def prenorm_fwd(x: Tensor, w: Tensor, eps: float, dtype: torch.dtype) -> Tensor:
    """x (n, l, d) with unit stride along d, w (2, d) -> u (2, n·l, d) contiguous in ``dtype``: both directions'
    block RMSNorm (``norms.block_rms_norm`` with each direction's weight), the statistics shared."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    M = x2.shape[0]
    br, bd = _norm_shape(d, NORM_ELEMENTS_FWD)
    u = torch.empty(2, M, d, dtype=dtype, device=x.device)
    _prenorm_fwd_kernel[(triton.cdiv(M, br),)](
        x2, w, u, M, d, x2.stride(0), eps, BR=br, BD=bd, num_warps=NORM_WARPS
    )
    return u


def prenorm_bwd(x: Tensor, w: Tensor, eps: float, du: Tensor, dres: Tensor) -> tuple[Tensor, Tensor]:
    """Backward of ``prenorm_fwd`` plus both blocks' residual: x (n, l, d), du (2, n·l, d), dres (2, n·l, d)
    contiguous -> (dx (n, l, d) in x's dtype, dw (2, d) float32)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    M = x2.shape[0]
    br, bd = _norm_shape(d, NORM_ELEMENTS_BWD)
    nb = max(1, min(NORM_BLOCKS_PER_PROGRAM, triton.cdiv(M, br)))
    nprog = triton.cdiv(M, nb * br)
    dx = torch.empty(M, d, dtype=x.dtype, device=x.device)
    dwp = torch.empty(nprog, 2, d, dtype=torch.float32, device=x.device)
    _prenorm_bwd_kernel[(nprog,)](
        x2, w, du, dres, dx, dwp, M, d, x2.stride(0), eps, NB=nb, BR=br, BD=bd, num_warps=NORM_WARPS
    )  # fmt: skip
    return dx.view(x.shape), dwp.sum(0)


# ---- the Function ---------------------------------------------------------------------------------------------
class Dims:
    """Static sizes of one call: n sequences of l steps, d model dim, DI inner, g·N = GN, h heads, p head dim."""

    def __init__(self, x: Tensor, in_w: Tensor, conv_w: Tensor, dt_bias: Tensor, ngroups: int) -> None:
        self.n, self.l, self.d = x.shape
        self.M = self.n * self.l
        self.E = in_w.shape[1]
        self.ch = conv_w.shape[1]
        self.h = dt_bias.shape[1]
        self.DI = self.E - self.ch - self.h
        self.GN = (self.ch - self.DI) // 2
        self.g = ngroups
        self.p = self.DI // self.h


def _forward_to_scan(
    x: Tensor, norm_w: Tensor, in_w: Tensor, conv_w: Tensor, conv_b: Tensor, dt_bias: Tensor, A_log: Tensor,
    D: Tensor, eps: float, dm: Dims, cdtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """u (2, M, d), zxbcdt (2, M, E), xBC (2n, l, ch), Δ (2n, l, h) float32, A (2, h), y (2n, l, h, p)."""
    u = prenorm_fwd(x, norm_w, eps, cdtype)  # (2, M, d)
    zxbcdt = torch.bmm(u, in_w.to(cdtype).transpose(1, 2))  # (2, M, E)
    rows = zxbcdt.view(2 * dm.n, dm.l, dm.E)
    xBC = conv_fwd(rows[..., dm.DI : dm.DI + dm.ch], conv_w, conv_b, dm.n)  # (2n, l, ch)
    acc = torch.promote_types(cdtype, torch.float32)
    dt = F.softplus(zxbcdt[..., dm.E - dm.h :].to(acc) + dt_bias.to(acc)[:, None, :]).view(
        2 * dm.n, dm.l, dm.h
    )
    A = -torch.exp(A_log.to(acc))
    xs, B, C = _scan_views(xBC, dm)
    y, _ = ssd_triton._forward(xs, dt, A, B, C, D.to(acc), None, False, 2)
    return u, zxbcdt, xBC, dt, A, y


def _scan_views(xBC: Tensor, dm: Dims) -> tuple[Tensor, Tensor, Tensor]:
    """x (2n, l, h, p), B, C (2n, l, g, N): views of the activated conv output."""
    xs = xBC[..., : dm.DI].unflatten(-1, (dm.h, dm.p))
    B = xBC[..., dm.DI : dm.DI + dm.GN].unflatten(-1, (dm.g, dm.GN // dm.g))
    C = xBC[..., dm.DI + dm.GN :].unflatten(-1, (dm.g, dm.GN // dm.g))
    return xs, B, C


class _BidirectionalMamba2(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, norm_w: Tensor, in_w: Tensor, conv_w: Tensor, conv_b: Tensor, dt_bias: Tensor,
        A_log: Tensor, D: Tensor, gnorm_w: Tensor, out_w: Tensor,
        eps: float, geps: float, ngroups: int, cdtype: torch.dtype, save: str,
    ) -> Tensor:  # fmt: skip
        CALLS[0] += 1
        dm = Dims(x, in_w, conv_w, dt_bias, ngroups)
        u, zxbcdt, xBC, dt, A, y = _forward_to_scan(
            x, norm_w, in_w, conv_w, conv_b, dt_bias, A_log, D, eps, dm, cdtype
        )
        z = zxbcdt.view(2 * dm.M, dm.E)[:, : dm.DI]
        g = gated_norm_fwd(y.view(2 * dm.M, dm.DI), z, gnorm_w, geps)  # (2M, DI)
        out = torch.bmm(g.view(2, dm.M, dm.DI), out_w.to(cdtype).transpose(1, 2))  # (2, M, d)
        res = x[None] + out.view(2, dm.n, dm.l, dm.d).to(x.dtype)  # (2, n, l, d): each block's residual
        kept = (u, zxbcdt, xBC, dt, y) if save == "all" else ()
        ctx.save_for_backward(x, norm_w, in_w, conv_w, conv_b, dt_bias, A_log, D, gnorm_w, out_w, *kept)
        ctx.consts = (eps, geps, ngroups, cdtype)
        return res

    @staticmethod
    def backward(ctx: Any, dres: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, norm_w, in_w, conv_w, conv_b, dt_bias, A_log, D, gnorm_w, out_w, *kept = ctx.saved_tensors
        eps, geps, ngroups, cdtype = ctx.consts
        dm = Dims(x, in_w, conv_w, dt_bias, ngroups)
        acc = torch.promote_types(cdtype, torch.float32)
        if kept:
            u, zxbcdt, xBC, dt, y = kept
            A = -torch.exp(A_log.to(acc))
        else:
            u, zxbcdt, xBC, dt, A, y = _forward_to_scan(
                x, norm_w, in_w, conv_w, conv_b, dt_bias, A_log, D, eps, dm, cdtype
            )
        dout = dres.to(cdtype).reshape(2, dm.M, dm.d)
        # out_proj and the gated norm: dz lands in the z columns of d zxbcdt
        dg = torch.bmm(dout, out_w.to(cdtype))  # (2, M, DI)
        dzx = torch.empty(
            2 * dm.M, dm.E, dtype=cdtype, device=x.device
        )  # d zxbcdt, filled column group by group
        dy = torch.empty(2 * dm.n, dm.l, dm.h, dm.p, dtype=cdtype, device=x.device)
        z = zxbcdt.view(2 * dm.M, dm.E)[:, : dm.DI]
        g, dgnorm_w = gated_norm_bwd(
            y.view(2 * dm.M, dm.DI), z, dg.view(2 * dm.M, dm.DI), gnorm_w, geps,
            dy.view(2 * dm.M, dm.DI), dzx[:, : dm.DI],
        )  # fmt: skip
        dout_w = torch.bmm(dout.transpose(1, 2), g.view(2, dm.M, dm.DI))  # (2, d, DI)
        del dg, g  # (transient buffers go as soon as they are read: the backward's peak is what matters)
        # the SSD, both directions in one launch per kernel
        xs, B, C = _scan_views(xBC, dm)
        dxs, ddt, dA, dB, dC, dD, _ = ssd_triton._backward(xs, dt, A, B, C, D.to(acc), None, dy, None, 2)
        del dy, xs, B, C, xBC, y, kept
        # conv + SiLU: d xBC (pre-activation input) into its columns of d zxbcdt
        rows = zxbcdt.view(2 * dm.n, dm.l, dm.E)
        drows = dzx.view(2 * dm.n, dm.l, dm.E)
        dconv_w, dconv_b = conv_bwd(
            rows[..., dm.DI : dm.DI + dm.ch], conv_w, conv_b,
            dxs.view(2 * dm.n, dm.l, dm.DI), dB.flatten(-2), dC.flatten(-2),
            drows[..., dm.DI : dm.DI + dm.ch], dm.n,
        )  # fmt: skip
        del dxs, dB, dC
        # Δ = softplus(dt + dt_bias): softplus' = σ
        dt_raw = zxbcdt[..., dm.E - dm.h :].to(acc)
        d_dt = ddt.view(2, dm.M, dm.h) * torch.sigmoid(dt_raw + dt_bias.to(acc)[:, None, :])
        dzx.view(2, dm.M, dm.E)[..., dm.E - dm.h :] = d_dt.to(cdtype)
        dzx3 = dzx.view(2, dm.M, dm.E)
        din_w = torch.bmm(dzx3.transpose(1, 2), u)  # (2, E, d)
        du = torch.bmm(dzx3, in_w.to(cdtype))  # (2, M, d)
        del dzx, dzx3, drows, zxbcdt, rows, z
        # the shared prenorm (u_k = xn·w_k, xn = x·rstd) and both blocks' residual
        dx, dnorm_w = prenorm_bwd(x, norm_w, eps, du, dres.reshape(2, dm.M, dm.d).contiguous())
        return (
            dx, dnorm_w.to(norm_w.dtype), din_w.to(in_w.dtype), dconv_w.to(conv_w.dtype),
            dconv_b.to(conv_b.dtype), d_dt.sum(1).to(dt_bias.dtype), (dA * A).to(A_log.dtype),
            cast(Tensor, dD).to(D.dtype), dgnorm_w.to(gnorm_w.dtype), dout_w.to(out_w.dtype),
            None, None, None, None, None,
        )  # fmt: skip


def kernels_apply(x: Tensor) -> bool:
    """True where ``KernelMamba2Block`` runs its Function on x: a float32, bf16 or fp16 CUDA tensor (or a CPU
    tensor under Triton's interpreter, for tests), no tracer, compiler or exporter watching. (Under autocast
    the dual path's activations are bf16: the band split's projection hands them over in its dtype.)"""
    if not (x.is_cuda or (_INTERPRET and x.device.type == "cpu")):
        return False
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


class KernelMamba2Block(BidirectionalBlock):
    """The official bidirectional Mamba2 block (same parameters and function as ``BidirectionalBlock`` over two
    prenorm Mamba2 blocks) as one autograd Function over Triton kernels: see the module docstring.

    ``save``: what the forward keeps for the backward, "all" or "input" (``SAVE_MODES``). Elsewhere than on
    ``kernels_apply`` inputs it runs its blocks as ``BidirectionalBlock`` does."""

    save = "all"

    def forward(self, x: Tensor) -> Tensor:  # (n, l, d) -> (n, l, d)
        if not kernels_apply(x) or x.shape[1] == 0:
            return super().forward(x)
        x = x.contiguous()  # the kernels read rows of unit stride
        blocks = [self.forward_blocks[0], self.backward_blocks[0]]
        ms = [cast(Any, b).mixer for b in blocks]
        m = ms[0]
        device = x.device.type
        cdtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.autocast(device, enabled=False):
            fb = _BidirectionalMamba2.apply(
                x,
                torch.stack([cast(Any, b).norm.weight for b in blocks]),
                torch.stack([mm.in_proj.weight for mm in ms]),
                torch.stack([mm.conv1d.weight[:, 0, :] for mm in ms]),
                torch.stack([mm.conv1d.bias for mm in ms]),
                torch.stack([mm.dt_bias for mm in ms]),
                torch.stack([mm.A_log for mm in ms]),
                torch.stack([mm.D for mm in ms]),
                torch.stack([mm.norm.weight for mm in ms]),
                torch.stack([mm.out_proj.weight for mm in ms]),
                cast(Any, blocks[0]).norm.eps,
                m.norm.eps,
                m.ngroups,
                cdtype,
                self.save,
            )
        w_f, w_b = self.linear.weight.chunk(2, dim=1)
        return x + (F.linear(fb[0], w_f, self.linear.bias) + F.linear(fb[1], w_b))
