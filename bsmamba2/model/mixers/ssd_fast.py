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
pays), the decays, cumulative sums and carried states in float32 or wider. Autocast is switched off inside, so
nothing is cast back and forth per product.

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
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD, any length; the function of ``ssd.ssd_chunked`` (module docstring for the layout)."""
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
        if grad or states_io or rows >= b:
            y, final = _scan(
                x, dt, A, B, C, cs, dtype, acc, initial_state, return_final_state, inplace=not grad
            )
        else:  # inference without states: blocks of sequences, written into one output
            y = x.new_empty(b, l, h, p, dtype=dtype)
            for i in range(0, b, rows):
                part = slice(i, i + rows)
                y[part] = _scan(x[part], dt[part], A, B[part], C[part], cs, dtype, acc, None, False, True)[0]
            final = None
        if D is not None:
            y = y + x * D.to(dtype)[:, None]
    if return_final_state:
        assert final is not None
        return y, final
    return y


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
