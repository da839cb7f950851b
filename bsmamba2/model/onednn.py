"""oneDNN's fused CPU kernels for inference (a linear or a depthwise convolution with its SiLU in one pass),
and the inference weights they run on (converted and packed once, kept on the module).

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
import weakref
from collections.abc import Callable

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


@functools.cache
def bf16_native() -> bool:
    """True where oneDNN has bf16 kernels for this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT). Elsewhere (an
    AVX2-only CPU) its bf16 products raise, and bf16 takes the plain PyTorch ops."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def usable(*ts: Tensor) -> bool:
    """True where the oneDNN kernels take these tensors: CPU, float32 or bf16 (where the CPU has bf16
    kernels), all one dtype."""
    dtype = ts[0].dtype
    return (
        ENABLED
        and available()
        and dtype in _DTYPES
        and (dtype != torch.bfloat16 or bf16_native())
        and all(t.device.type == "cpu" and t.dtype == dtype for t in ts)
    )


def pack(w: Tensor, rows: int) -> Tensor:
    """w (o, k) in oneDNN's own layout for products of about ``rows`` rows (5-10 % faster ones at the
    mixers' shapes, 2026-12-01), or w itself where oneDNN does not run. Pack once, multiply many times."""
    if not usable(w) or w.requires_grad:
        return w
    return torch.ops.mkldnn._reorder_linear_weight(w, rows)


def linear(x: Tensor, w: Tensor, b: Tensor | None = None, silu: bool = False) -> Tensor:
    """x (m, k) @ wᵀ + b (w (o, k), plain or ``pack``ed; b (o,) or None), then SiLU if ``silu``: (m, o) in
    x's dtype."""
    if usable(x, w, *(() if b is None else (b,))):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "swish" if silu else "none", [], "")
    y = F.linear(x, w.to_dense() if w.is_mkldnn else w, b)
    return F.silu(y, inplace=True) if silu else y


def conv2d_silu(x: Tensor, w: Tensor, b: Tensor, padding: tuple[int, int], groups: int) -> Tensor:
    """SiLU(conv2d(x, w, b, padding, groups=groups)), stride and dilation 1: x (n, c, H, W) in any layout
    (a channels-last input keeps that layout in the output) -> (n, o, H', W')."""
    if usable(x, w, b):
        return torch.ops.mkldnn._convolution_pointwise(
            x, w, b, list(padding), [1, 1], [1, 1], groups, "swish", [], ""
        )
    return F.silu(F.conv2d(x, w, b, padding=padding, groups=groups), inplace=True)


def compute_dtype(weight: Tensor) -> torch.dtype:
    """The dtype the projections run in: CPU autocast's when it is on, else the weight's."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return weight.dtype


# Prepared weights per module, kept beside it (not in its __dict__): a module holding packed oneDNN tensors
# could not be deep-copied or pickled, and nothing of them belongs in a state dict. An entry goes with its module.
_PREPARED: weakref.WeakKeyDictionary[object, tuple[tuple[object, ...], tuple[Tensor, ...]]] = (
    weakref.WeakKeyDictionary()
)


def prepared_weights(
    owner: object,
    sources: tuple[Tensor, ...],
    dtype: torch.dtype,
    make: Callable[[], tuple[Tensor, ...]],
    finish: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None = None,
) -> tuple[Tensor, ...]:
    """``make()``'s tensors (weights derived from ``sources``) in ``dtype``, passed through ``finish`` (a
    layout change: packing), made once and kept for ``owner`` until one of the sources changes (an in-place
    update bumps its version, a new tensor its address), another dtype is asked for or oneDNN is switched on
    or off."""
    key = (dtype, ENABLED, *((t.data_ptr(), t._version) for t in sources))
    cached = _PREPARED.get(owner)
    if cached is None or cached[0] != key:
        ws = tuple(w.detach().to(dtype) for w in make())
        cached = (key, ws if finish is None else finish(ws))
        _PREPARED[owner] = cached
    return cached[1]


def cached_weights(owner: object) -> tuple[Tensor, ...] | None:
    """The weights ``prepared_weights`` keeps for ``owner`` now, if any."""
    cached = _PREPARED.get(owner)
    return None if cached is None else cached[1]
