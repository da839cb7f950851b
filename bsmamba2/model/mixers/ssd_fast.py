"""The SSD scan in plain PyTorch, laid out for speed: the default on CPU (and on any non-CUDA device).

The same block decomposition as ``ssd.ssd_chunked`` (the readable reference; ``tests/test_ssd_fast.py`` holds
this one to it and to the step-by-step recurrence), arranged so that every product is a plain batched matmul
over contiguous batches, with as few passes over the big intermediates as possible:

* the (s × s) decay matrix of every head and chunk is the largest tensor (h·s numbers per step). It is made
  in four passes: one subtraction, a clamp, exp and the product with the group's C·Bᵀ, whose causal mask
  (computed once per group, not per head) also zeroes the upper triangle; clamping the exponent at 0 keeps
  that triangle finite, so no ``-inf`` fill is needed;
* the state terms keep the input's own (chunk, step, head) layout, with the heads of a group folded into
  the matrix columns: C·Sᵀ and Xᵀ·B are then one matmul per (sequence, group, chunk) and nothing is
  broadcast (copied) over heads;
* the inter-chunk recurrence runs as a loop over chunks, one fused multiply-add per chunk on the (k·p × n)
  states (26 steps for an 8 s chunk at hop 441 and chunk 32; ``cpu_chunk`` picks the length);
* a sequence that fits one chunk (the band path: 62 bands) with no state in or out skips the state terms;
* large batches run in blocks of sequences (inference only) so that each block's decay matrices stay in
  cache between their passes instead of streaming through memory four times.

Precision: the products run in the inputs' dtype (bf16 from an autocast region: the matmuls are where bf16
pays), the decays, cumulative sums and carried states in float32 or wider; at inference the factored scan's
per-step factors are rounded to the products' dtype before they multiply (a mixed bf16 × float32 product is
three passes on the CPU). Autocast is switched off inside, so nothing is cast back and forth per product.

Shapes as in ``ssd.py``: x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) -> y (b, l, h, p).
Axis legend: c chunks, s steps in a chunk, g groups, k heads per group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bsmamba2.model.mixers.ssd_types import check_shapes

# Inference runs the batch in blocks whose decay matrices take about this many bytes (the last-level cache of a few cores).
BLOCK_BYTES = 16 << 20


def ssd_fast(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    factor: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD, any length; the function of ``ssd.ssd_chunked`` (module docstring for the layout).

    ``factor``: without autograd, factor the decays (``_scan_factored``). Its chunks and their reference
    points depend on the decays of the whole chunk, so an output's rounding can depend on later inputs;
    ``ssd_fast_causal`` (factor=False) keeps every output bit-for-bit independent of the future."""
    b, l, h, p, g, n = check_shapes(x, dt, A, B, C)
    dtype = torch.promote_types(x.dtype, torch.promote_types(B.dtype, C.dtype))  # the products
    acc = torch.promote_types(torch.promote_types(dtype, dt.dtype), torch.float32)  # decays and states
    cs = max(1, min(chunk_size, l))
    if x.device.type == "cpu" and l > chunk_size:  # a sequence that fits one chunk stays one (no states)
        cs = min(cpu_chunk(p, n), l)
    with torch.autocast(x.device.type, enabled=False):
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C))
        states_io = initial_state is not None or return_final_state
        rows = _block_rows(b, l, h, cs, acc)
        q = factor_chunk(dt.to(acc) * A.to(acc)) if factor and not grad else None
        if q is not None:
            y, final = _scan_factored(x, dt, A, B, C, q, dtype, acc, initial_state, return_final_state)
        elif grad or states_io or rows >= b:
            y, final = _scan(
                x, dt, A, B, C, cs, dtype, acc, initial_state, return_final_state, inplace=not grad
            )
        else:  # inference without states: blocks of sequences, written into one output
            y = x.new_empty(b, l, h, p, dtype=dtype)
            for i in range(0, b, rows):
                part = slice(i, i + rows)
                y[part] = _scan(x[part], dt[part], A, B[part], C[part], cs, dtype, acc, None, False, True)[0]
            final = None
        if D is not None:  # at inference in place, rounded once
            y = y + x * D.to(dtype)[:, None] if grad else y.addcmul_(x, D.to(y.dtype)[:, None])
    if return_final_state:
        assert final is not None
        return y, final
    return y


def ssd_fast_causal(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``ssd_fast`` without factored decays, for causal models: no output's rounding depends on later inputs."""
    return ssd_fast(
        x, dt, A, B, C, D,
        chunk_size=chunk_size, initial_state=initial_state, return_final_state=return_final_state, factor=False,
    )  # fmt: skip


def cpu_chunk(p: int, n: int) -> int:
    """The chunk length this scan uses on CPU for sequences longer than the model's chunk_size (which changes
    rounding only, never the function): the largest power of two <= √(p·n).

    Per step, the decay matrices cost h·s numbers and the carried states h·p·n/s, so s ≈ √(p·n) balances the
    two memory streams. Measured (1 thread, 801 frames, 2026-12-01): the bundled model (p 32, n 64) was
    fastest at 32 of 32 / 64 / 128, the paper's (p 64, n 128) at 64.
    """
    return max(16, min(256, 1 << (int(math.isqrt(p * n)).bit_length() - 1)))


def _block_rows(b: int, l: int, h: int, cs: int, acc: torch.dtype) -> int:
    """Sequences per block: as many as keep a block's decay matrices (h·l·cs numbers each) near BLOCK_BYTES."""
    per_sequence = h * l * cs * torch.empty(0, dtype=acc).element_size()
    return max(1, BLOCK_BYTES // max(1, per_sequence))


def _scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    cs: int,
    dtype: torch.dtype,
    acc: torch.dtype,
    initial_state: Tensor | None,
    want_final: bool,
    inplace: bool,
) -> tuple[Tensor, Tensor | None]:
    """The scan without the D skip: y (b, l, h, p) in ``dtype`` and the final state (b, h, p, n) in ``acc``
    if ``want_final``. ``inplace``: reuse the decay tensors' memory (no autograd through them)."""
    b, l, h, p = x.shape
    g = B.shape[-2]
    pad = (-l) % cs
    xdt = (x.to(acc) * dt.to(acc)[..., None]).to(dtype)  # (b, l, h, p): the input enters scaled by Δ
    a = dt.to(acc) * A.to(acc)  # (b, l, h): log-decay per step, <= 0
    B, C = B.to(dtype), C.to(dtype)
    if pad:  # padded steps have Δ = 0: they neither decay nor feed the state
        xdt, a = F.pad(xdt, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    acum = torch.cumsum(rearrange(a, "b (c s) (g k) -> b g k c s", s=cs, g=g), dim=-1)  # (b, g, k, c, s)
    Bc = rearrange(B, "b (c s) g n -> b g c s n", s=cs).contiguous()  # (b, g, c, s, n)
    Cc = rearrange(C, "b (c s) g n -> b g c s n", s=cs).contiguous()  # (b, g, c, s, n)

    # intra-chunk: y_i = Σ_{j<=i} (C_i·B_j) exp(acum_i − acum_j) X_j, one (s × s) matrix per head and chunk.
    CB = (Cc @ Bc.transpose(-1, -2)).tril()  # (b, g, c, s, s); the mask also zeroes decay's upper triangle
    diff = acum[..., :, None] - acum[..., None, :]  # (b, g, k, c, s, s), <= 0 on and below the diagonal
    if inplace:
        decay = diff.clamp_max_(0.0).exp_()
        decay = decay.to(dtype) if dtype != acc else decay
        decay.mul_(CB[:, :, None])
    else:
        decay = diff.clamp_max(0.0).exp().to(dtype) * CB[:, :, None]
    X = rearrange(xdt, "b (c s) (g k) p -> b g k c s p", s=cs, g=g).contiguous()
    y_diag = decay @ X  # (b, g, k, c, s, p)
    y = rearrange(y_diag, "b g k c s p -> b (c s) (g k) p")
    chunks = acum.shape[-2]
    final: Tensor | None = None
    if chunks > 1 or initial_state is not None or want_final:
        y_off, final = _states(xdt, acum, Bc, Cc, cs, dtype, acc, initial_state)
        y = y_off.add_(y) if inplace else y_off + y  # y_off is in the natural (b, l, h, p) layout
    return y[:, :l], final


def _states(
    xdt: Tensor,
    acum: Tensor,
    Bc: Tensor,
    Cc: Tensor,
    cs: int,
    dtype: torch.dtype,
    acc: torch.dtype,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The state terms: what the state entering each chunk adds to its outputs, y_off (b, l, h, p), and the
    state after the last chunk (b, h, p, n). xdt (b, l, h, p) padded to whole chunks, acum (b, g, k, c, s)."""
    b, L, h, p = xdt.shape
    _, g, k, c, _ = acum.shape
    n = Bc.shape[-1]
    # each chunk's own state (from zero): Σ_j exp(acum_end − acum_j) X_j ⊗ B_j, heads of a group in columns
    to_end = rearrange(torch.exp(acum[..., -1:] - acum), "b g k c s -> b c s (g k) 1").to(dtype)
    Xd = rearrange(xdt.view(b, c, cs, h, p) * to_end, "b c s (g k) p -> b g c s (k p)", g=g)
    own = Xd.transpose(-1, -2) @ Bc  # (b, g, c, k·p, n), in the products' dtype
    through = rearrange(torch.exp(acum[..., -1]), "b g k c -> b g c k 1 1")  # decay across a whole chunk
    S = (
        acum.new_zeros(b, g, k, p, n)
        if initial_state is None
        else rearrange(initial_state.to(acc), "b (g k) p n -> b g k p n", g=g)
    )
    # The entering states are the biggest tensor of a long scan (h·p·n numbers per chunk): written once, in
    # the products' dtype and the (n × k·p) layout the read-out multiplies, while S itself stays in acc.
    states = own.new_empty(b, g, c, n, k * p)
    for i in range(c):  # S (b, g, k, p, n): the state entering chunk i
        states[:, :, i] = rearrange(S, "b g k p n -> b g n (k p)")
        S = torch.addcmul(own[:, :, i].view(b, g, k, p, n), through[:, :, i], S)
    # y_off_i = exp(acum_i) · C_i · S_entering, one (s × n) @ (n × k·p) product per (sequence, group, chunk)
    y_off = rearrange(Cc @ states, "b g c s (k p) -> b c s g k p", p=p)  # (b, c, s, g, k, p)
    scale = rearrange(torch.exp(acum), "b g k c s -> b c s g k 1").to(dtype)
    y_off = rearrange(y_off * scale, "b c s g k p -> b (c s) (g k) p")
    return y_off, rearrange(S, "b g k p n -> b (g k) p n")


# ---- inference: factored decays -----------------------------------------------------------------------------
# Without autograd, a chunk's decays exp(acum_i − acum_j) are factored as exp(acum_i − m) · exp(m − acum_j), m
# the midpoint of the chunk's cumulative log-decays, when both factors stay within exp(±FACTOR_EXP) (far from
# float32's ±88, so neither overflows): chunks are made short enough for that. A scan that would need chunks
# under MIN_FACTOR_CHUNK steps (a head forgetting everything within a few steps) takes the decay matrices.
FACTOR_EXP = 60.0
MIN_FACTOR_CHUNK = 8
MAX_FACTOR_CHUNK = 128
# The smallest carry factor γ applied as one float32 number (well inside the normal range, which ends at 1.2e-38)
GAMMA_MIN = 1e-30


def factor_chunk(a: Tensor, longest: int = MAX_FACTOR_CHUNK) -> int | None:
    """The chunk length of the factored scan for log-decays a (b, l, h) (≤ 0): the longest q ≤ ``longest``
    that cuts l into equal chunks (the last one padded) each spanning at most 2·FACTOR_EXP of log-decay; None
    if that takes chunks shorter than MIN_FACTOR_CHUNK."""
    b, l, h = a.shape
    span = float(-a.sum(1).min())  # the widest range of a whole sequence: a bound for any chunk's
    c = max(math.ceil(l / longest), math.ceil(span / (2 * FACTOR_EXP)), 1)
    while True:
        q = math.ceil(l / c)
        if q == 0 or q < min(l, MIN_FACTOR_CHUNK):
            return None
        ranges = F.pad(a, (0, 0, 0, c * q - l)).view(b, c, q, h).sum(2)  # (b, c, h), ≤ 0
        if float(-ranges.min()) <= 2 * FACTOR_EXP:
            return q
        c = max(c + 1, math.ceil(c * 1.25))


def _scan_factored(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    q: int,
    dtype: torch.dtype,
    acc: torch.dtype,
    initial_state: Tensor | None,
    want_final: bool,
) -> tuple[Tensor, Tensor | None]:
    """``_scan`` with factored decays in chunks of q (``factor_chunk``), no autograd: every product is a GEMM
    over the input's own layout, and no (q × q) matrix per head is made.

    Per chunk, with u_i = exp(acum_i − m), v_j = exp(m − acum_j), X'_j = v_j·Δ_j·x_j:
    y_i = u_i · (Σ_{j≤i} (C_i·B_j) X'_j + C_i · e^m S_in), and the chunk's own state is u_end · Σ_j X'_j ⊗ B_j."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    k = h // g
    c = math.ceil(l / q)
    L = c * q
    dt = dt.to(acc)
    a = F.pad(dt * A.to(acc), (0, 0, 0, L - l))  # (b, L, h); padded steps have Δ = 0
    acum = a.view(b, c, q, h).cumsum(2)  # (b, c, q, h)
    mid = (acum[:, :, :1] + acum[:, :, -1:]) * 0.5  # (b, c, 1, h)
    rel = acum - mid  # within ±FACTOR_EXP
    u = torch.exp(rel)  # (b, c, q, h)
    coef = rel.neg_().exp_().view(b, L, h)[:, :l].mul_(dt)  # v_j · Δ_j, (b, l, h)
    Xs = x.new_empty(b, L, h, p, dtype=dtype)
    # The per-step factors in the products' dtype: a bf16 tensor times a float32 one is three passes on the
    # CPU (both converted, then multiplied: 3x the time of the bf16 product, 2026-12-01), for one rounding of
    # each factor per (step, head) more (benchmarks/cpu_ab.py reports the model's distance to fp32).
    torch.mul(x, coef.to(dtype)[..., None], out=Xs[:, :l])  # X'
    u_prod = u.to(dtype)
    if L > l:  # padded steps: zero input, and B, C rows that multiply nothing
        Xs[:, l:].zero_()
        B, C = F.pad(B, (0, 0, 0, 0, 0, L - l)), F.pad(C, (0, 0, 0, 0, 0, L - l))
    Bc = rearrange(B.to(dtype), "b (c s) g n -> b g c s n", s=q)  # views for one group
    Cc = rearrange(C.to(dtype), "b (c s) g n -> b g c s n", s=q)
    Xc = rearrange(Xs, "b (c s) (g k) p -> b g c s (k p)", s=q, g=g)  # (b, g, c, q, k·p)
    Y = (Cc @ Bc.transpose(-1, -2)).tril_() @ Xc  # (b, g, c, q, k·p): the intra-chunk sums
    final: Tensor | None = None
    if c > 1 or initial_state is not None or want_final:
        final = _factored_states(Y, Xc, Bc, Cc, acum, mid, u, acc, initial_state, k)
    heads = rearrange(u_prod, "b c s (g k) -> b g c s k 1", g=g)
    Y.view(b, g, c, q, k, p).mul_(heads)  # × u_i
    y = rearrange(Y, "b g c s (k p) -> b (c s) (g k) p", p=p)  # a view for one group
    return y[:, :l], final


def _factored_states(
    Y: Tensor,
    Xc: Tensor,
    Bc: Tensor,
    Cc: Tensor,
    acum: Tensor,
    mid: Tensor,
    u: Tensor,
    acc: torch.dtype,
    initial_state: Tensor | None,
    k: int,
) -> Tensor:
    """Adds what the state entering each chunk contributes to Y (b, g, c, q, k·p) (before the u_i factor)
    and returns the state after the last chunk (b, h, p, n) in ``acc``.

    With T_i the state after chunk i, own_i = Σ_j B_j ⊗ X'_j its own part and S_i = e^{m_i} T_{i-1} what
    chunk i reads out: T_i = u_end_i (own_i + S_i) (as exp(acum_end_i) = u_end_i e^{m_i}), so the carry runs
    on S directly, S_{i+1} = γ_{i+1} (own_i + S_i) with γ_{i+1} = exp(m_{i+1} + acum_end_i − m_i) ∈ (0, 1]:
    one float32 chunk of state carried, each S_i written once in the products' dtype."""
    b, g, c, q, kp = Y.shape
    n, p = Bc.shape[-1], kp // k

    def per_head(t: Tensor) -> Tensor:  # (b, h) -> (b, g, 1, k, 1), against a chunk's (b, g, n, k, p)
        return rearrange(t, "b (g k) -> b g 1 k 1", g=g)

    own = (Bc.transpose(-1, -2) @ Xc).view(b, g, c, n, k, p)  # Σ_j B_j ⊗ X'_j, products' dtype
    m = mid[:, :, 0]  # (b, c, h)
    gamma = torch.exp(m[:, 1:] + acum[:, :-1, -1] - m[:, :-1])  # (b, c - 1, h)
    S_in = Y.new_empty(b, g, c, n, k, p)  # (b, g, c, n, k·p): the (n × k·p) layout of the read-out
    if initial_state is None:
        S = own.new_zeros(b, g, n, k, p, dtype=acc)
        S_in[:, :, 0].zero_()
    else:
        S = rearrange(initial_state.to(acc), "b (g k) p n -> b g n k p", g=g) * per_head(torch.exp(m[:, 0]))
        S_in[:, :, 0] = S
    # γ spans e^-120..1: where one would fall out of float32's normal range, apply it as its two factors
    # u_end_i and e^{m_{i+1}} (each within e^-60..1), so that no factor loses precision
    split = bool((gamma < GAMMA_MIN).any())
    for i in range(c - 1):
        S.add_(own[:, :, i])
        if split:
            S.mul_(per_head(u[:, i, -1])).mul_(per_head(torch.exp(m[:, i + 1])))
        else:
            S.mul_(per_head(gamma[:, i]))
        S_in[:, :, i + 1] = S
    Y.view(-1, q, kp).baddbmm_(Cc.reshape(-1, q, n), S_in.view(-1, n, kp))
    final = S.add_(own[:, :, -1]).mul_(per_head(u[:, -1, -1]))  # T_{c-1}, (b, g, n, k, p)
    return rearrange(final, "b g n k p -> b (g k) p n")
