"""The sequence-mixer interface, and the build-time options every mixer's blocks are made with.

A sequence mixer maps (b, l, d) -> (b, l, d): b independent sequences of length l and width d (in the dual
path, every band along time or every frame along bands). A mixer that is causal along l can also run a
sequence in pieces: ``init_state(batch, device, dtype)`` gives the state before the first step, and
``step(x (b, l', d), state) -> (y (b, l', d), new_state)`` continues from it, so that the pieces' outputs,
concatenated, equal ``forward`` on the whole sequence. ``step`` consumes the state it is given (a mixer may
update its tensors in place: a stream's state is its biggest tensor); copy it to branch a stream. Mixers
that look at the whole sequence at once (attention) keep ``streamable`` False and say so when asked to step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bsmamba2.errors import UserError
from bsmamba2.model.mixers.ssd import ssd_chunked
from bsmamba2.model.mixers.ssd_types import SSDFn
from bsmamba2.model.norms import RMSNormKernel


class NotStreamableError(UserError):
    """A mixer (or block) that needs the whole sequence was asked to run step by step."""


class SequenceMixer(nn.Module):
    """Base of every sequence mixer and block: ``forward(x (b, l, d)) -> (b, l, d)``, plus the optional
    streaming API (``streamable``, ``init_state``, ``step``). Subclasses that stream override all three."""

    @property
    def streamable(self) -> bool:
        """True if ``step`` can carry this module across pieces of a sequence."""
        return False

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """The state before the first step of ``batch`` sequences (all zeros: nothing seen yet)."""
        raise NotStreamableError(self._why_not())

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """x (b, l, d), the state after the previous piece -> (y (b, l, d), the state after this piece)."""
        raise NotStreamableError(self._why_not())

    def prenorm_kernel(self) -> RMSNormKernel | None:
        """A fused RMS norm for the prenorm of a block around this mixer, which the block runs in place of its
        reference norm where ``norms.triton_norm_applies`` (CUDA inference); None (the default): none."""
        return None

    def _why_not(self) -> str:
        return f"{type(self).__name__} cannot run step by step: each output depends on the whole sequence"


@dataclass(frozen=True)
class BlockOptions:
    """Choices made once, when a model is built, for all of its blocks (see ``bsmamba2.model.build_model``).

    Mixers use what applies to them and ignore the rest."""

    scan: SSDFn = ssd_chunked  # the SSD function of Mamba2 mixers, resolved from the backend name
    fused: bool = (
        False  # build the fused form of blocks that have one (Mamba2: compiled glue around the scan)
    )
    causal: bool = False  # a time block of a causal model: forward along the sequence only, streamable
