"""Mamba2 sequence mixer with mamba_ssm v2.2.2's parameter names and semantics (OFFICIAL_SPEC §1.6).

(batch, length, dim) -> (batch, length, dim). The SSD scan itself lives in ``ssd.py`` (reference forms) and in
optional fused kernels; this module is the projections, the causal depthwise convolution, Δ and A, the gated
norm and the output projection around it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.mixers.ssd import resolve_backend, ssd
from bsmamba2.model.norms import GatedRMSNorm


class Mamba2(nn.Module):
    """Mamba2 mixer. Parameters: in_proj (z, x, B, C, dt), conv1d, dt_bias, A_log, D, norm, out_proj.

    Official sizes for d_model=256: expand 4 → d_inner 1024, headdim 64 → 16 heads, d_state 128, 1 group,
    d_conv 4; in_proj has 2·1024 + 2·128 + 16 = 2320 outputs.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 4,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        backend: str = "auto",
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        self.ngroups = ngroups
        self.d_state = d_state
        self.chunk_size = chunk_size
        self.backend = backend
        conv_dim = self.d_inner + 2 * ngroups * d_state  # the x, B, C channels share one convolution
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)
        # Δ bias: softplus⁻¹ of a log-uniform draw in [dt_min, dt_max] (floored), as mamba_ssm initialises it.
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log), one scalar per head (Mamba2's A = a·I), a drawn from U(A_init_range).
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:  # u (b, l, d_model) -> (b, l, d_model)
        b, l, _ = u.shape
        gn = self.ngroups * self.d_state
        zxbcdt = self.in_proj(u)  # (b, l, 2·d_inner + 2·g·n + h)
        z, xBC, dt = zxbcdt.split([self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        # Causal depthwise conv: pad d_conv-1 on both sides, keep the first l outputs (zeros before t = 0).
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :l].transpose(1, 2))  # (b, l, d_inner + 2·g·n)
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        acc = torch.promote_types(u.dtype, torch.float32)  # Δ and A in (at least) float32, as mamba_ssm
        dt = F.softplus(dt.to(acc) + self.dt_bias.to(acc))  # (b, l, h) Δ > 0; never clamped (dt_limit (0, ∞))
        A = -torch.exp(self.A_log.to(acc))  # (h,)
        y = ssd(
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            dt,
            A,
            rearrange(B, "b l (g n) -> b l g n", g=self.ngroups),
            rearrange(C, "b l (g n) -> b l g n", g=self.ngroups),
            self.D.to(acc),
            backend=resolve_backend(self.backend, u.device),
            chunk_size=self.chunk_size,
        )
        assert isinstance(y, Tensor)
        y = rearrange(y, "b l h p -> b l (h p)")  # (b, l, d_inner)
        return self.out_proj(self.norm(y, z))
