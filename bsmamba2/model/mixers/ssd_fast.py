"""The SSD scan in plain PyTorch, laid out for speed: the default on CPU (and on any non-CUDA device).

The same block decomposition as ``ssd.ssd_chunked`` (the readable reference; ``tests/test_ssd_fast.py`` holds
this one to it and to the step-by-step recurrence), arranged so that every product is a plain batched matmul
over contiguous (group, head, chunk) batches instead of an einsum whose operand permutations cost copies:

* heads are split into (group g, head-in-group k) and kept *before* the chunk axis, so C·Bᵀ is formed once per
  (sequence, group, chunk) and broadcast over the k heads, and each head's (s × s) masked decay matrix multiplies
  its (s × p) inputs in one ``@``;
* the inter-chunk recurrence runs as a loop over chunks on the (p × n) states (13 steps for an 8 s chunk at hop
  441 and chunk 64) instead of a (c+1)² decay-matrix einsum;
* a sequence that fits one chunk (the band path: 62 bands) with no state in or out skips the state terms.

Shapes as in ``ssd.py``: x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) -> y (b, l, h, p).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bsmamba2.model.mixers.ssd_types import check_shapes


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
    dtype = torch.promote_types(torch.promote_types(x.dtype, B.dtype), torch.promote_types(C.dtype, dt.dtype))
    x, B, C, dt = x.to(dtype), B.to(dtype), C.to(dtype), dt.to(dtype)
    cs = max(1, min(chunk_size, l))
    pad = (-l) % cs
    xdt = x * dt[..., None]  # (b, l, h, p): the input enters scaled by Δ
    a = dt * A  # (b, l, h): log-decay per step, <= 0
    if pad:  # padded steps have Δ = 0: they neither decay nor feed the state
        xdt, a = F.pad(xdt, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    X = rearrange(xdt, "b (c s) (g k) p -> b g k c s p", s=cs, g=g)
    acum = torch.cumsum(rearrange(a, "b (c s) (g k) -> b g k c s", s=cs, g=g), dim=-1)  # (b, g, k, c, s)
    Bc = rearrange(B, "b (c s) g n -> b g c s n", s=cs)[:, :, None]  # (b, g, 1, c, s, n)
    Cc = rearrange(C, "b (c s) g n -> b g c s n", s=cs)[:, :, None]  # (b, g, 1, c, s, n)

    # intra-chunk: y_i = Σ_{j<=i} (C_i·B_j) exp(acum_i − acum_j) X_j, one (s × s) matrix per head and chunk
    causal = torch.ones(cs, cs, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((acum[..., :, None] - acum[..., None, :]).masked_fill(~causal, -torch.inf))
    y = (decay * (Cc @ Bc.transpose(-1, -2))) @ X  # (b, g, k, c, s, p)

    chunks = acum.shape[-2]
    final: Tensor | None = None
    if chunks > 1 or initial_state is not None or return_final_state:
        # each chunk's own state (from zero): Σ_j exp(acum_end − acum_j) X_j ⊗ B_j
        own = (X * torch.exp(acum[..., -1:] - acum)[..., None]).transpose(-1, -2) @ Bc  # (b, g, k, c, p, n)
        through = torch.exp(acum[..., -1])  # (b, g, k, c): decay across a whole chunk
        S = (
            x.new_zeros(b, g, h // g, p, n)
            if initial_state is None
            else rearrange(initial_state.to(dtype), "b (g k) p n -> b g k p n", g=g)
        )
        entering = []
        for c in range(chunks):
            entering.append(S)
            S = through[..., c, None, None] * S + own[:, :, :, c]
        final = S
        states = torch.stack(entering, dim=3)  # (b, g, k, c, p, n): the state entering each chunk
        y = y + (Cc @ states.transpose(-1, -2)) * torch.exp(acum)[..., None]
    y = rearrange(y, "b g k c s p -> b (c s) (g k) p")[:, :l]
    if D is not None:
        y = y + x * D[:, None]
    if return_final_state:
        assert final is not None
        return y, rearrange(final, "b g k p n -> b (g k) p n")
    return y
