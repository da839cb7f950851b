"""RoFormer sequence mixer for the BS-RoFormer baseline: rotary self-attention + feed-forward, prenorm.

(batch, length, dim) -> (batch, length, dim). Attention runs through PyTorch's scaled_dot_product_attention,
so it uses flash / memory-efficient kernels where the device has them. Attention looks at the whole
sequence, so the block cannot stream (``streamable`` is False and ``step`` raises NotStreamableError).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.config import RoFormerConfig
from bsmamba2.model.mixers.base import BlockOptions, NotStreamableError, SequenceMixer
from bsmamba2.model.norms import RMSNorm


def rotary_cos_sin(
    length: int, dim_head: int, device: torch.device, theta: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """cos, sin tables (length, dim_head) for rotary position embeddings (Su et al.), pairs interleaved."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim_head, 2, device=device, dtype=torch.float32) / dim_head)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq  # (l, dim_head/2)
    angles = angles.repeat_interleave(2, dim=-1)  # (l, dim_head)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # x (b, h, l, e)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)  # (b, h, l, e): each pair (a, b) -> (-b, a)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (b, l, dim) -> (b, l, dim)
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b l (s h e) -> s b h l e", s=3, h=self.heads)
        cos, sin = rotary_cos_sin(x.shape[1], self.dim_head, x.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, h, l, e)
        return self.to_out(rearrange(out, "b h l e -> b l (h e)"))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RoFormerBlock(SequenceMixer):
    """One transformer layer along an axis: x + Attn(x), then + FF(x); both prenorm. Bidirectional by itself,
    so it is the whole dual-path block (no forward/backward pair)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, ff_mult: int = 4) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x: Tensor) -> Tensor:  # (b, l, dim) -> (b, l, dim)
        x = x + self.attn(x)
        return x + self.ff(x)


def build_block(dim: int, settings: RoFormerConfig, options: BlockOptions) -> RoFormerBlock:
    """The BS-RoFormer baseline's dual-path block; ``options`` (the SSD scan, fusion) do not apply to it.
    Attention sees the whole sequence, so there is no causal form (NotStreamableError)."""
    if options.causal:
        raise NotStreamableError("the roformer mixer has no causal form; causal models need mixer mamba2")
    return RoFormerBlock(
        dim, **dataclasses.asdict(settings)
    )  # the settings' fields are its keyword arguments
