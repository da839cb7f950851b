"""Streaming helpers over (channels, frames) blocks: a block reader that keeps memory flat in the file's
length, and a sample FIFO that lines up blocks of different sizes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bsmamba2.audio.convert import check_finite
from bsmamba2.audio.decode import open_reader, short_error
from bsmamba2.errors import AudioError


def read_blocks(path: str | os.PathLike[str], frames: int, block: int) -> Iterator[np.ndarray]:
    """Yield (C, n <= block) float32 blocks of a file's first ``frames`` samples, in its own rate and
    layout, decoded in order from one open file (only one block in memory, for every format). Raises
    AudioError on NaN/Inf samples or a read error."""
    p = Path(path)
    reader = open_reader(p)
    try:
        start = 0
        while start < frames:
            try:
                x = reader.read(min(block, frames - start))
            except AudioError:
                raise
            except Exception as e:  # libsndfile's and FFmpeg's read errors
                raise AudioError(f"{p}: cannot read audio ({short_error(e)})") from None
            if x.shape[-1] == 0:  # the header over-reported the length
                return
            check_finite(x, str(p))
            start += x.shape[-1]
            yield x
    finally:
        reader.close()


class SampleFifo:
    """First-in first-out queue of (C, n) blocks, popped by sample count (e.g. the input samples matching
    the next piece of output, whose blocks have other sizes)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._blocks: list[np.ndarray] = []

    def push(self, x: np.ndarray) -> None:
        """Append (C, n) samples."""
        self._blocks.append(x)

    def pop(self, k: int) -> np.ndarray:
        """Remove and return the first k samples (C, k); zero-padded if fewer are queued."""
        parts: list[np.ndarray] = []
        need = k
        while need > 0 and self._blocks:
            head = self._blocks[0]
            if head.shape[-1] <= need:
                parts.append(self._blocks.pop(0))
                need -= head.shape[-1]
            else:
                parts.append(head[:, :need])
                self._blocks[0] = head[:, need:]
                need = 0
        if need > 0:
            parts.append(np.zeros((self.channels, need), np.float32))
        return np.concatenate(parts, axis=-1)
