"""Exponential moving average of the weights (official: decay 0.999 after every optimizer step, OFFICIAL_SPEC §2.2).

The average lives in a full copy of the model, so validating or saving it is the same as for the model:
``ema.module`` is an ordinary ``BandSplitSeparator`` in eval mode with ``requires_grad`` off.
"""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class EMA(Generic[M]):
    """θ_ema ← decay · θ_ema + (1 − decay) · θ after each optimizer step; buffers are copied as they are."""

    def __init__(self, model: M, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module: M = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (same architecture, unwrapped)."""
        for avg, p in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - self.decay)  # avg + (1 − decay)(p − avg)
        for avg_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            avg_b.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
