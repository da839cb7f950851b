"""Session 6's form of the split backward's per-chunk kernel, kept only so that ``bench_ssd.py --only split`` can
time it against the library's ``ssd_triton_split._bwd_chunk_kernel`` in the same process (and
``ssd_resources.py`` can compile both). Same arguments and results; the library's form computes the same
arithmetic in the same order with fewer live registers (ptxas, sm_90a, chunk 64: 732 B of spills against this
form's 1,616 B). Delete this file once a GPU run has ranked the two.
"""

from __future__ import annotations

import triton
import triton.language as tl

from bsmamba2.model.mixers.ssd_triton_split import _chunk_program, _mem_rows


@triton.jit
def bwd_chunk_kernel_s6(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, states_ptr, dstates_ptr,
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr,
    L, NSEQ, H, HPG, G, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    """Grid (b·h, chunks). dx (b,l,h,p), ddt (b,l,h) contiguous; dB, dC (b,l,g,n) fp32 zero-filled (atomics);
    dA, dD partials (b·h, chunks) fp32."""
    pid64, ci, nchunks, bi, hi, gi, di = _chunk_program(H, HPG, NSEQ)
    t = tl.arange(0, T)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pm = pp < P
    nm = nn < N
    causal = t[:, None] >= t[None, :]
    A = tl.load(A_ptr + di * H + hi).to(tl.float32)
    Dh = 0.0
    if HAS_D:
        Dh = tl.load(D_ptr + di * H + hi).to(tl.float32)
    rows = ci * T + t
    tm = rows < L
    mr = _mem_rows(rows, di, L, REV)
    xm = tm[:, None] & pm[None, :]
    bm = tm[:, None] & nm[None, :]
    x = tl.load(x_ptr + bi * sx_b + hi * sx_h + mr[:, None] * sx_l + pp[None, :] * sx_p, mask=xm, other=0.0)
    x = x.to(tl.float32)
    dy = tl.load(
        dy_ptr + bi * sdy_b + hi * sdy_h + mr[:, None] * sdy_l + pp[None, :] * sdy_p, mask=xm, other=0.0
    )
    dy = dy.to(tl.float32)
    dt = tl.load(dt_ptr + bi * sdt_b + hi * sdt_h + mr * sdt_l, mask=tm, other=0.0).to(tl.float32)
    Bm = tl.load(B_ptr + bi * sb_b + gi * sb_g + mr[:, None] * sb_l + nn[None, :] * sb_n, mask=bm, other=0.0)
    Bm = Bm.to(DOT)
    Cm = tl.load(C_ptr + bi * sc_b + gi * sc_g + mr[:, None] * sc_l + nn[None, :] * sc_n, mask=bm, other=0.0)
    Cm = Cm.to(DOT)
    so = (pid64 * nchunks + ci) * BP * BN + pp[:, None] * BN + nn[None, :]
    S0 = tl.load(states_ptr + so)  # (BP, BN) the state entering this chunk, DOT dtype
    dS = tl.load(dstates_ptr + so)  # (BP, BN) the gradient of the state leaving it, DOT dtype
    a = dt * A
    cum = tl.cumsum(a, axis=0)
    cl = tl.sum(a, axis=0)
    e_in = tl.exp(cum)  # (T,) decay from the chunk's entry to step i
    e_out = tl.exp(cl - cum)  # (T,) decay from step i to the chunk's end
    xdt = x * dt[:, None]  # (T, BP)
    xdt_d = xdt.to(DOT)
    dy_d = dy.to(DOT)
    # intra-chunk interactions
    Lm = tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))  # (T, T)
    CB = tl.dot(Cm, tl.trans(Bm), input_precision=PREC)  # (T, T)
    ML = tl.dot(dy_d, tl.trans(xdt_d), input_precision=PREC) * Lm  # (dy_i·xdt_j)·L_ij = ∂L/∂CB_ij
    W = ML * CB  # w(i, j) of the decay-gradient identity
    E = tl.cumsum(W, axis=1) - W  # E[i, k] = Σ_{j<k} w(i, j)
    da = tl.sum(tl.where(causal, E, 0.0), axis=0)  # Σ_{i>=k, j<k} w(i, j)
    ML_d = ML.to(DOT)
    # dC: the entering state's part (also gives its share of da), then the intra part on top
    dCo = tl.dot(dy_d, S0, input_precision=PREC) * e_in[:, None]  # (T, BN)
    q = tl.sum(Cm.to(tl.float32) * dCo, axis=1)  # (T,) dy_i · (entering state's part of y_i)
    da += tl.sum(q, axis=0) - tl.cumsum(q, axis=0) + q  # Σ_{i>=k} q_i
    da += tl.exp(cl) * tl.sum(tl.sum(dS.to(tl.float32) * S0.to(tl.float32), axis=1), axis=0)
    dC = tl.dot(ML_d, Bm, dCo, input_precision=PREC)
    bo = (bi * L * G + gi) * N + mr[:, None] * (G * N) + nn[None, :]
    tl.atomic_add(dC_ptr + bo, dC, mask=bm, sem="relaxed")
    # dB: through the state at the chunk's end, then the intra part
    dB = tl.dot(xdt_d, dS, input_precision=PREC) * e_out[:, None]  # (T, BN)
    dB = tl.dot(tl.trans(ML_d), Cm, dB, input_precision=PREC)
    tl.atomic_add(dB_ptr + bo, dB, mask=bm, sem="relaxed")
    # d(dt·x): through the state at the chunk's end (also gives its share of da), then the intra part
    dxo = tl.dot(Bm, tl.trans(dS), input_precision=PREC) * e_out[:, None]  # (T, BP)
    r = tl.sum(xdt * dxo, axis=1)  # (T,) this step's input → later chunks' outputs
    da += tl.cumsum(r, axis=0) - r  # Σ_{j<k} r_j
    dxdt = tl.dot(tl.trans((CB * Lm).to(DOT)), dy_d, dxo, input_precision=PREC)  # (T, BP)
    ddt = tl.sum(dxdt * x, axis=1) + A * da
    dx = dxdt * dt[:, None] + Dh * dy
    tl.store(
        dx_ptr + (bi * L * H + hi) * P + mr[:, None] * (H * P) + pp[None, :],
        dx.to(dx_ptr.dtype.element_ty),
        mask=xm,
    )
    tl.store(ddt_ptr + bi * L * H + hi + mr * H, ddt.to(ddt_ptr.dtype.element_ty), mask=tm)
    tl.store(dA_ptr + pid64 * nchunks + ci, tl.sum(da * dt, axis=0))
    tl.store(dD_ptr + pid64 * nchunks + ci, tl.sum(tl.sum(dy * x, axis=1), axis=0))
