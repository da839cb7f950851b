"""The chunked SSD backward split into a sweep kernel and a per-chunk kernel (the time path's default backward).

``ssd_triton._bwd_chunked_kernel`` does the whole backward of one (sequence, head) in one program: it re-runs
the state sweep, then walks the chunks in reverse carrying the state gradient dS while it forms every gradient.
Its live set (the carried float32 dS, the entering state, a dozen chunk tiles) exceeds the register file: ptxas
reports 255 registers and kilobytes of spills. Here the two sequential parts are separated from the parallel
one (on an H200, both directions of the paper's time path: 18.5 ms against that kernel's 22.3 ms):

* ``_sweeps_kernel``, one program per (sequence, head) and per sweep (grid 2·b·h): the first half re-runs
  the state sweep and stores the state entering each chunk, S_c; the second half runs the state-gradient sweep
  backwards and stores dS_c, the gradient of the state leaving chunk c:
      dS_{c-1} = exp(cl_c)·dS_c + (dy_c ∘ e_in_c)ᵀ·C_c,   e_in_c(i) = exp(cum_i),
  and the gradient of the initial state (dS entering chunk 0). Each program keeps one state and one chunk's
  inputs live: no gradient math.
* ``_bwd_chunk_kernel``, one program per (sequence, chunk, head): every gradient of the chunk from its inputs,
  S_c and dS_c (the same formulas as the fused kernel's phase 2, nothing carried between chunks). dB and dC are
  summed over heads with float32 atomics; dA, dD partials are stored per chunk and summed on the host.

The sweeps store S_c and dS_c in the matrix-product dtype (bf16 for bf16 inputs, as the fused kernel's scratch
did; float32 for float32 inputs, so the float32 path stays exact). Scratch: 2 · b·h·chunks·p·n elements, alive
only during the backward call.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mem_rows(rows, di, L, REV: tl.constexpr):
    """Memory rows of logical steps ``rows`` (0 = the first step the scan sees): the same rows for a sequence
    scanned forward (di 0), counted from the end for one scanned backward (di 1). Logical rows >= L stay
    masked by the callers, whatever row they map to."""
    if REV:
        rows = tl.where(di == 1, L - 1 - rows, rows)
    return rows


@triton.jit
def _sweep_step(
    S, rows, di, L, A, u_base, su_l, su_p, v_base, sv_l, sv_n, dt_base, sdt_l, pp, nn, pm, nm,
    GRAD: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    """One chunk (logical steps ``rows``) of a sweep: S ← e^{cl}·S + (u ∘ w)ᵀ·v, with u = x, v = B,
    w = dt·e^{cl − cum} for the state (leaving the chunk), and u = dy, v = C, w = e^{cum} for the state gradient
    (entering it, GRAD)."""
    tm = rows < L
    mr = _mem_rows(rows, di, L, REV)
    u = tl.load(u_base + mr[:, None] * su_l + pp[None, :] * su_p, mask=tm[:, None] & pm[None, :], other=0.0)
    dt = tl.load(dt_base + mr * sdt_l, mask=tm, other=0.0).to(tl.float32)
    v = tl.load(v_base + mr[:, None] * sv_l + nn[None, :] * sv_n, mask=tm[:, None] & nm[None, :], other=0.0)
    a = dt * A
    cum = tl.cumsum(a, axis=0)
    cl = tl.sum(a, axis=0)
    if GRAD:
        w = tl.exp(cum)
    else:
        w = dt * tl.exp(cl - cum)
    uw = (u.to(tl.float32) * w[:, None]).to(DOT)
    return tl.dot(tl.trans(uw), v.to(DOT), S * tl.exp(cl), input_precision=PREC)


@triton.jit
def _sweeps_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, dy_ptr, init_ptr, dfinal_ptr, states_ptr, dstates_ptr, dinit_ptr,
    L, NSEQ, NPROG, H, HPG, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_DFINAL: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    """states / dstates: (b·h, chunks, BP, BN) in the DOT dtype; dinit (b, h, p, n) float32 (with HAS_INIT)."""
    prog = tl.program_id(0)
    grad = prog >= NPROG  # the second half of the grid runs the state-gradient sweep
    pid = tl.where(grad, prog - NPROG, prog)
    pid64 = pid.to(tl.int64)
    bi = (pid // H).to(tl.int64)
    hi = pid % H
    gi = hi // HPG
    di = (bi // NSEQ).to(tl.int32)  # 0: scanned forward; 1: from the last step back (see _mem_rows)
    t = tl.arange(0, T)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pm = pp < P
    nm = nn < N
    A = tl.load(A_ptr + di * H + hi).to(tl.float32)
    dt_base = dt_ptr + bi * sdt_b + hi * sdt_h
    so = pp[:, None] * BN + nn[None, :]  # offsets in a (BP, BN) scratch tile
    sm = pm[:, None] & nm[None, :]
    go = pid64 * P * N + pp[:, None] * N + nn[None, :]  # offsets in a contiguous (b, h, p, n) state
    nchunks = tl.cdiv(L, T)
    if not grad:
        x_base = x_ptr + bi * sx_b + hi * sx_h
        b_base = B_ptr + bi * sb_b + gi * sb_g
        out = states_ptr + pid64 * nchunks * BP * BN
        if HAS_INIT:
            S = tl.load(init_ptr + go, mask=sm, other=0.0).to(tl.float32)
        else:
            S = tl.zeros((BP, BN), dtype=tl.float32)
        tl.store(out + so, S.to(DOT))
        for ci in range(0, nchunks - 1):
            S = _sweep_step(
                S, ci * T + t, di, L, A, x_base, sx_l, sx_p, b_base, sb_l, sb_n, dt_base, sdt_l, pp, nn, pm, nm,
                GRAD=False, DOT=DOT, PREC=PREC, REV=REV,
            )  # fmt: skip
            tl.store(out + (ci + 1) * BP * BN + so, S.to(DOT))
    else:
        dy_base = dy_ptr + bi * sdy_b + hi * sdy_h
        c_base = C_ptr + bi * sc_b + gi * sc_g
        out = dstates_ptr + pid64 * nchunks * BP * BN
        if HAS_DFINAL:
            dS = tl.load(dfinal_ptr + go, mask=sm, other=0.0).to(tl.float32)
        else:
            dS = tl.zeros((BP, BN), dtype=tl.float32)
        last = 0 if HAS_INIT else 1  # the gradient entering chunk 0 is needed only for an initial state
        for k in range(0, nchunks - last):
            ci = nchunks - 1 - k
            tl.store(out + ci * BP * BN + so, dS.to(DOT))
            dS = _sweep_step(
                dS, ci * T + t, di, L, A, dy_base, sdy_l, sdy_p, c_base, sc_l, sc_n, dt_base, sdt_l, pp, nn, pm, nm,
                GRAD=True, DOT=DOT, PREC=PREC, REV=REV,
            )  # fmt: skip
        if HAS_INIT:
            tl.store(dinit_ptr + go, dS, mask=sm)
        else:
            tl.store(out + so, dS.to(DOT))


@triton.jit
def _chunk_program(H, HPG, NSEQ):
    """A per-chunk kernel's program (grid b·h × chunks): its (sequence·head) index, chunk, chunk count,
    sequence, head, group and direction (0 forward, 1 from the last step back)."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    hi = pid % H
    di = (bi // NSEQ).to(tl.int32)
    return pid.to(tl.int64), tl.program_id(1), tl.num_programs(1), bi, hi, hi // HPG, di


@triton.jit
def _bwd_chunk_kernel(
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
