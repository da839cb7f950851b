"""What every SSD implementation shares: its call signature and the shape check it runs first.

Shapes (axis legend: b batch, l length, h heads, p head dim, g groups, n state size):
    x (b, l, h, p), dt (b, l, h), A (h,), B (b, l, g, n), C (b, l, g, n), D (h,) or None,
    initial_state (b, h, p, n) or None  ->  y (b, l, h, p) [, final state (b, h, p, n)]

Its own module so that the reference scans (``ssd.py``) and the fused kernels (``ssd_triton.py``) import it
and not each other.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class SSDFn(Protocol):
    """An SSD scan: returns y, or (y, final state) when ``return_final_state``."""

    def __call__(
        self,
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
    ) -> Tensor | tuple[Tensor, Tensor]: ...


def check_shapes(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor
) -> tuple[int, int, int, int, int, int]:
    """(b, l, h, p, g, n) of consistent SSD inputs; ValueError naming every shape otherwise."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    if dt.shape != (b, l, h) or A.shape != (h,) or B.shape != (b, l, g, n) or C.shape != (b, l, g, n):
        raise ValueError(
            f"ssd shape mismatch: x{tuple(x.shape)} dt{tuple(dt.shape)} A{tuple(A.shape)} "
            f"B{tuple(B.shape)} C{tuple(C.shape)}"
        )
    if h % g:
        raise ValueError(f"heads ({h}) must be divisible by groups ({g})")
    return b, l, h, p, g, n
