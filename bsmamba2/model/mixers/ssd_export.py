"""An export-friendly chunked SSD: the reference's block decomposition with no branch on the sequence length.

``ssd_chunked`` (bsmamba2/model/mixers/ssd.py) shrinks the chunk to the length when the sequence is short and
pads only when it has to; both are Python decisions on the length, which an exporter with a dynamic frame count
can only bake in for the example it traced. This form always uses ``chunk_size`` steps per chunk and always
pads to a whole number of chunks (by zero steps, possibly none), written in matrix products instead of
multi-operand einsums, and builds its triangular masks from ``arange`` comparisons. It computes the same
function as the reference (tests/test_ssd_export.py checks it against ``ssd_naive`` and ``ssd_chunked`` in
float64); it is the registered SSD backend ``"export"`` (``ssd.BACKENDS``).

Shapes (axis legend: b batch, l length, h heads = g·k, g groups, k heads per group, p head dim, n state size,
c chunks, s steps in a chunk): x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) or None ->
y (b, l, h, p) and, if asked, the final state (b, h, p, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

BACKEND = "export"


def _lower(T: int, device: torch.device, strict: bool) -> Tensor:
    """(T, T) bool: i > j (``strict``) or i >= j, from index comparisons (no eye/tril of a dynamic size)."""
    i = torch.arange(T, device=device)
    return i[:, None] > i[None, :] if strict else i[:, None] >= i[None, :]


def segsum_export(a: Tensor) -> Tensor:
    """The reference ``segsum``: out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above.

    a (..., T) -> (..., T, T), by masked cumulative sums (exact where cumsum differences are not).
    """
    T = a.shape[-1]
    strict = _lower(T, a.device, strict=True)
    out = torch.cumsum(a[..., None].expand(*a.shape, T).masked_fill(~strict, 0.0), dim=-2)
    return out.masked_fill(~_lower(T, a.device, strict=False), -torch.inf)


def ssd_export(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int = 256,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD for any length with a fixed chunk of ``chunk_size`` steps (see the module docstring)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    dtype = torch.promote_types(torch.promote_types(x.dtype, B.dtype), torch.promote_types(C.dtype, dt.dtype))
    x, B, C, dt = x.to(dtype), B.to(dtype), C.to(dtype), dt.to(dtype)
    cs = chunk_size
    nc = (l + cs - 1) // cs  # chunks; the padded steps have dt = 0: no decay, no input
    pad = nc * cs - l
    xdt = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))  # (b, c·s, h, p): the input scaled by Δ
    a = F.pad(dt * A, (0, 0, 0, pad))  # (b, c·s, h): log-decay per step, <= 0
    B = F.pad(B, (0, 0, 0, 0, 0, pad))
    C = F.pad(C, (0, 0, 0, 0, 0, pad))
    X = rearrange(xdt.unflatten(1, (nc, cs)), "b c s (g k) p -> b c g k s p", g=g)
    Bc = rearrange(B.unflatten(1, (nc, cs)), "b c s g n -> b c g s n")[:, :, :, None]  # (b, c, g, 1, s, n)
    Cc = rearrange(C.unflatten(1, (nc, cs)), "b c s g n -> b c g s n")[:, :, :, None]  # (b, c, g, 1, s, n)
    a_cum = torch.cumsum(rearrange(a.unflatten(1, (nc, cs)), "b c s (g k) -> b c g k s", g=g), dim=-1)

    # 1. intra-chunk outputs: y_i = sum_{j<=i} (C_i·B_j) · exp(a_cum_i - a_cum_j) · X_j
    diff = a_cum[..., :, None] - a_cum[..., None, :]  # (b, c, g, k, s_i, s_j)
    Ldec = torch.exp(diff.masked_fill(~_lower(cs, x.device, strict=False), -torch.inf))
    CB = Cc @ Bc.transpose(-1, -2)  # (b, c, g, 1, s_i, s_j)
    y_diag = (CB * Ldec) @ X  # (b, c, g, k, s, p)

    # 2. the state each chunk builds from zero: sum_j exp(a_cum_end - a_cum_j) · X_j ⊗ B_j
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)  # (b, c, g, k, s)
    states = (X * decay_states[..., None]).transpose(-1, -2) @ Bc  # (b, c, g, k, p, n)

    # 3. inter-chunk recurrence over chunk boundaries (a scalar decay per head and chunk)
    if initial_state is None:
        init = states.new_zeros(b, 1, g, h // g, p, n)
    else:
        init = rearrange(initial_state.to(dtype), "b (g k) p n -> b 1 g k p n", g=g)
    states = rearrange(torch.cat([init, states], dim=1), "b z g k p n -> b g k z (p n)")  # z = c + 1
    chunk_decay = rearrange(F.pad(a_cum[..., -1], (0, 0, 0, 0, 1, 0)), "b z g k -> b g k z")
    states = torch.exp(segsum_export(chunk_decay)) @ states  # (b, g, k, c+1, p·n)
    states = rearrange(states, "b g k z (p n) -> b z g k p n", p=p)
    entering, final = states[:, :-1], states[:, -1]  # per chunk; after the last chunk

    # 4. each chunk's entering state read out at every step: C_i · S · exp(a_cum_i)
    y_off = (Cc @ entering.transpose(-1, -2)) * torch.exp(a_cum)[..., None]  # (b, c, g, k, s, p)
    y = rearrange(y_diag + y_off, "b c g k s p -> b (c s) (g k) p")[:, :l]
    if D is not None:
        y = y + x * D[:, None]
    if return_final_state:
        return y, rearrange(final, "b g k p n -> b (g k) p n")
    return y
