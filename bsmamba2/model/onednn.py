"""oneDNN's fused CPU kernels for inference: a linear or a depthwise convolution with its SiLU in one pass.

PyTorch sends float32 ``F.linear`` on the CPU to MKL, whose sgemm took 2.3x oneDNN's time on the AMD EPYC
here (20.5 ms against 9.0 ms for (4092 × 256) · (256 × 1040), 1 thread, 2026-12-01: MKL's AMD path), and
runs SiLU as a separate pass, which in bf16 costs half a GEMM of these shapes (1.3 ms on 4M numbers). The
``torch.ops.mkldnn`` pointwise ops (the ones inductor's CPU backend fuses into) do both in one kernel, and
apply the SiLU before rounding the product to bf16 (one rounding, where conv-then-SiLU rounds twice).

Used where the inputs are CPU tensors in float32 or bf16 and the build has oneDNN; every function falls back
to the plain PyTorch ops (the same function) elsewhere, or where ``ENABLED`` is switched off (tests run both).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

ENABLED = True  # tests switch it off to hold the fallback to the same numbers
_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def available() -> bool:
    """True where this torch build has oneDNN and its pointwise ops (``torch.ops.mkldnn``)."""
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.mkldnn, op) for op in ("_linear_pointwise", "_convolution_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


def usable(*ts: Tensor) -> bool:
    """True where the oneDNN kernels take these tensors: CPU, float32 or bf16, all one dtype."""
    dtype = ts[0].dtype
    return (
        ENABLED
        and available()
        and dtype in _DTYPES
        and all(t.device.type == "cpu" and t.dtype == dtype for t in ts)
    )


def linear(x: Tensor, w: Tensor, silu: bool = False) -> Tensor:
    """x (m, k) @ wᵀ (w (o, k)), no bias, then SiLU if ``silu``: (m, o) in x's dtype."""
    if usable(x, w):
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "swish" if silu else "none", [], "")
    y = F.linear(x, w)
    return F.silu(y, inplace=True) if silu else y


def conv2d_silu(x: Tensor, w: Tensor, b: Tensor, padding: tuple[int, int], groups: int) -> Tensor:
    """SiLU(conv2d(x, w, b, padding, groups=groups)), stride and dilation 1: x (n, c, H, W) in any layout
    (a channels-last input keeps that layout in the output) -> (n, o, H', W')."""
    if usable(x, w, b):
        return torch.ops.mkldnn._convolution_pointwise(
            x, w, b, list(padding), [1, 1], [1, 1], groups, "swish", [], ""
        )
    return F.silu(F.conv2d(x, w, b, padding=padding, groups=groups), inplace=True)
