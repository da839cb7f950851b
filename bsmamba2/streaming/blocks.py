"""Block mode: any model, bidirectional ones included, as a stream of short blocks with lookahead.

The signal is cut into chunks of ``block + lookahead`` samples starting every ``block`` samples; each chunk is
separated on its own and neighbours are cross-faded over the ``lookahead`` they share (``bsmamba2.apply.
OverlapAdd`` with a small segment: a trapezoid window, so the weights sum to one everywhere). A sample is
final once the chunk that starts at or before it has been run, so ``BlockStream``'s output is the chunked
separation delayed by ``latency = block + lookahead − 1`` samples, for any split of the input into pushes.

Unlike ``CausalStream`` nothing is carried between chunks but the cross-fade: each chunk starts from scratch,
which is where short blocks lose quality (the paper's Table IV: BSMamba2 holds up at 1 s inputs, BS-RoFormer
degrades).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bsmamba2.apply import OverlapAdd


class BlockStream:
    """One stream through ``model`` ((B, C, L) -> (B, S, C, L)) in blocks. ``block`` and ``lookahead`` in
    samples (block ≥ 1, lookahead ≥ 0); tensors (c, n) on the model's device; ``dtype``: autocast dtype."""

    def __init__(
        self, model: nn.Module, *, block: int, lookahead: int, dtype: torch.dtype | None = None
    ) -> None:
        if block < 1 or lookahead < 0:
            raise ValueError(f"block must be >= 1 and lookahead >= 0 samples, got {block} and {lookahead}")
        self.model = model.eval()
        self.block, self.lookahead = int(block), int(lookahead)
        self.segment = self.block + self.lookahead
        self.latency = self.segment - 1  # samples
        self.dtype = dtype
        cfg = getattr(model, "cfg", None)
        self.stems = int(cfg.num_stems) if cfg is not None else None
        self.reset()

    def _engine(self) -> OverlapAdd:
        # overlap = lookahead / segment makes the chunk stride exactly ``block`` (OverlapAdd rounds it).
        return OverlapAdd(
            self.model,
            segment=self.segment,
            overlap=self.lookahead / self.segment,
            batch_size=1,
            transition="linear",
            dtype=self.dtype,
        )

    def reset(self) -> None:
        """Drop the stream under way; the next push starts a new one."""
        self._ola = self._engine()
        assert self._ola.stride == self.block
        self._ready: Tensor | None = None  # (s, c, *) output not returned yet, the latency's zeros first
        self.pushed = 0

    def push(self, block: Tensor) -> Tensor:
        """x (c, n) -> (s, c, n): the chunked separation delayed by ``latency`` samples (zeros at first)."""
        n = block.shape[-1]
        returned = self.pushed  # samples returned so far: all zeros until the first chunk has run
        self.pushed += n
        out = self._ola.push(block.float()) if n else None
        if self._ready is None:
            if out is None:  # nothing run yet: the stem count is only known for models with a cfg
                return self._zeros(block, n)
            self._ready = out.new_zeros(*out.shape[:-1], self.latency - returned)
        if out is not None:
            self._ready = torch.cat([self._ready, out], dim=-1)
        result, self._ready = self._ready[..., :n], self._ready[..., n:]
        return result

    def flush(self) -> Tensor:
        """The stream's last ``latency`` samples (s, c, latency); then reset. Pushes + flush = ``latency``
        zeros, then the chunked separation of everything pushed."""
        if self.pushed == 0:
            self.reset()
            return torch.zeros(0)
        rest = self._ola.finish()
        assert rest is not None  # something was pushed
        # Before the first chunk ran, every pushed sample came back as one of the latency's zeros.
        ready = (
            self._ready
            if self._ready is not None
            else rest.new_zeros(*rest.shape[:-1], self.latency - self.pushed)
        )
        out = torch.cat([ready, rest], dim=-1)
        self.reset()
        return out

    def _zeros(self, block: Tensor, n: int) -> Tensor:
        if self.stems is None:
            raise ValueError(
                "a model without .cfg gives no output before its first chunk; push a whole chunk"
            )
        return block.new_zeros(self.stems, block.shape[0], n, dtype=torch.float32)
