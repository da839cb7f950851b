"""The three RMS norms of the official model; they differ in eps and parametrisation, so each is its own class.

- ``RMSNorm`` (the repo's, band split and final_norm, OFFICIAL_SPEC §1.3): x / max(‖x‖₂, 1e-12) · √d · γ.
  No eps inside the square root; parameter ``gamma``.
- ``BlockRMSNorm`` (mamba_ssm's RMSNorm, the prenorm of each Mamba2 block, §1.5):
  x · (mean(x²) + 1e-5)^(-½) · weight, computed in float32; parameter ``weight``.
- ``GatedRMSNorm`` (mamba_ssm's RMSNormGated with norm_before_gate=False over all d_inner channels, §1.6):
  g = y ⊙ SiLU(z); g · (mean(g²) + 1e-5)^(-½) · weight, computed in float32.

The last two also have one-pass Triton forms (``mixers/norm_triton.py``) that the eager Mamba2 block uses for
CUDA inference on the Triton backend; ``triton_norm_applies`` says where.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The Triton forms (the Triton SSD backend's ``rms_norm`` / ``gated_rms_norm`` attributes): x, weight, eps,
# out_dtype -> the prenorm; y, z, weight, eps -> the gated norm. See ``mixers/norm_triton.py``.
RMSNormKernel = Callable[[Tensor, Tensor, float, torch.dtype], Tensor]
GatedNormKernel = Callable[[Tensor, Tensor, Tensor, float], Tensor]
TRITON_NORM_ENV = "BSMAMBA2_TRITON_NORM"  # "0": the reference norms everywhere
TRITON_NORM_MAX_D = 4096  # the kernels keep a whole row in registers
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # float64 stays on the reference


def triton_norm_applies(x: Tensor) -> bool:
    """True where a fused Triton norm replaces the reference on x (..., d): a CUDA tensor that
    ``triton_norm_eligible`` accepts."""
    return x.is_cuda and triton_norm_eligible(x)


def triton_norm_eligible(x: Tensor) -> bool:
    """Every condition of ``triton_norm_applies`` but the device: x (..., d) float32, bf16 or fp16 with
    d ≤ ``TRITON_NORM_MAX_D``, autograd off (the kernels have no backward), no tracer, compiler or exporter
    watching (they see the reference forms), and ``BSMAMBA2_TRITON_NORM`` not "0"."""
    if torch.is_grad_enabled() or x.dtype not in _KERNEL_DTYPES:
        return False
    if x.dim() == 0 or x.shape[-1] > TRITON_NORM_MAX_D or os.environ.get(TRITON_NORM_ENV, "1") == "0":
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def prenorm_dtype(x: Tensor) -> torch.dtype:
    """The dtype in which the prenorm of x feeds in_proj: autocast's bf16/fp16 where it is on for x's device (the
    cast autocast would make anyway, folded into the norm), else the reference's (at least float32)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        if dtype in (torch.bfloat16, torch.float16):
            return dtype
    return torch.promote_types(x.dtype, torch.float32)


def block_rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """mamba_ssm's RMSNorm in float32 (or float64): x · (mean(x²) + eps)^(-½) · weight."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.to(x.dtype)


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, eps: float) -> Tensor:
    """mamba_ssm's RMSNormGated (norm_before_gate=False, one group), in float32; returns y's dtype."""
    acc = torch.promote_types(y.dtype, torch.float32)
    g = y.to(acc) * F.silu(z.to(acc))
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return (g * weight.to(acc)).to(y.dtype)


class RMSNorm(nn.Module):
    """The official repo's RMSNorm: L2-normalise, rescale by √d, multiply by ``gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:  # (..., dim) -> (..., dim)
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class BlockRMSNorm(nn.Module):
    """mamba_ssm's RMSNorm (eps 1e-5), the prenorm of a Mamba2 block. Input is cast to float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:  # (..., dim) -> (..., dim) in float32 (or float64)
        return block_rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(nn.Module):
    """mamba_ssm's gated RMSNorm with norm_before_gate=False and one group: norm(y · SiLU(z)) · weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:  # (..., dim), (..., dim) -> (..., dim) in y's dtype
        return gated_rms_norm(y, z, self.weight, self.eps)
