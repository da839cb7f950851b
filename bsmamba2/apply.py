"""Model-agnostic chunked inference: cut a long signal into chunks, run them in batches, stitch them back.

Tensors in, tensors out: this module knows nothing of files, sample rates or channel layouts (the audio
package and :mod:`bsmamba2.pipeline` do). Any ``nn.Module`` mapping ``(B, C, L) -> (B, S, C, L)`` works
(S stems). Two ways of stitching:

- ``overlap > 0`` (``bsmamba2 separate``'s default ``DEFAULT_OVERLAP`` = 0.25): consecutive chunks overlap and are cross-faded with
  a trapezoid window (``transition="linear"``) or averaged (``"none"``); every output sample is the
  window-weighted mean of the chunks covering it, so an identity model returns its input exactly.
- ``overlap = 0`` (``bsmamba2 evaluate``'s default): the paper's plain concatenation (OFFICIAL_SPEC §7):
  chunks of ``segment`` samples, the last one zero-padded, outputs concatenated and trimmed.

``OverlapAdd`` is the block-stream entry point (push blocks in, get finished samples out; memory bounded by
a few chunks), for disk-to-disk streaming or a live front end; ``apply_model`` runs it over a whole tensor.
Both report progress through an optional ``callback(info)`` after every batch of chunks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bsmamba2.errors import UserError

Transition = Literal["linear", "none"]
# The overlap `bsmamba2 separate`, Separator and the web page use. Measured on the 16 synthetic v1 test songs
# with the first bundled model (scripts/gpu_default_v2.sh --eval, H200, 2026-12-01): vocal uSDR 6.04 dB at
# overlap 0, 6.06 at 0.25, 6.04 at 0.5. 0.25 costs 1.33 chunks per chunk of audio, 0.5 costs 2 (demucs: 0.25).
DEFAULT_OVERLAP = 0.25
TRANSITIONS = ("linear", "none")
NONFINITE = "the model produced NaN/Inf values (try --precision fp32)"
# On the CPU a batch goes through the model this many chunks per call. Batching buys no speed there (the
# network already runs each pass in slices of whole sequences, model.dualpath.CPU_INFERENCE_TOKENS), and
# every chunk in a call holds its own activations: with batch 4 in one call the bundled model peaked at
# 1.05 GiB, over the 1 GiB a laptop run should stay within (BENCHMARKS.md, memory).
CPU_CHUNKS_PER_CALL = 1

# Called after every batch of chunks with {"processed": chunks done, "total": chunks in all, "position":
# samples of the signal covered by finished chunks, "length": the signal's length in samples, "finished":
# finish() has begun, so the total is exact and, once processed reaches it, the model is no longer used}.
ProgressCallback = Callable[[dict[str, Any]], None]


# ---- windows and chunk layout ------------------------------------------------------------------------


def chunk_stride(segment: int, overlap: float) -> int:
    """Hop between chunk starts: ``segment * (1 - overlap)`` samples, at least 1."""
    if segment < 1:
        raise ValueError(f"segment must be at least 1 sample, got {segment}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return max(1, round(segment * (1.0 - overlap)))


def num_chunks(length: int, segment: int, stride: int) -> int:
    """Chunks needed to cover ``length`` samples: chunks start at 0, stride, ... until one reaches the end."""
    if length <= 0:
        return 0
    return 1 + max(0, math.ceil((length - segment) / stride))


def chunk_window(segment: int, stride: int, transition: Transition = "linear") -> Tensor:
    """Weights (segment,) given to one chunk's output before the weighted average.

    "linear": a trapezoid whose ramps span the overlap (capped at half a chunk), so two neighbours cross-fade
    linearly; every weight is > 0, hence every covered sample has a non-zero total weight. "none", or no
    overlap: all ones (plain averaging / concatenation).
    """
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    ramp = min(segment - stride, segment // 2)
    if transition == "none" or ramp <= 0:
        return torch.ones(segment)
    i = torch.arange(segment, dtype=torch.float64)
    w = torch.minimum((i + 1) / (ramp + 1), (segment - i) / (ramp + 1)).clamp(max=1.0)
    return w.float()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free module)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


# ---- streaming overlap-add engine -------------------------------------------------------------------


class OverlapAdd:
    """Streaming chunked inference over one signal.

    ``push(x (C, n))`` appends samples and returns the output samples that are final, as (S, C, m);
    ``finish()`` zero-pads the last chunk, runs what is left and returns the rest. The concatenation of all
    returned pieces is (S, C, N) for N pushed samples. Only a few chunks are held at any time.

    The chunk layout does not depend on how the input is split into pushes, so streaming and in-memory
    results are identical.

    ``callback(info)`` runs after every batch (see ``ProgressCallback``); ``info["processed"]`` grows by the
    batch's chunk count up to ``info["total"]``. ``length``: the expected number of samples, when known in
    advance, so that the total is right from the first batch; without it (a live stream) the total counts
    the samples pushed so far. Once ``finish()`` runs, the total is exact.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        segment: int,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 4,
        transition: Transition = "linear",
        dtype: torch.dtype | None = None,
        callback: ProgressCallback | None = None,
        length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.segment = int(segment)
        self.stride = chunk_stride(self.segment, overlap)
        self.batch_size = batch_size
        self.dtype = dtype
        self.callback = callback
        self.length = length
        self.processed = 0  # chunks run through the model so far
        self.window = chunk_window(self.segment, self.stride, transition)  # (L,)
        self.device = model_device(model)
        # A model compiled for fixed shapes (fused glue: torch.compile, dynamic=False) would recompile for a
        # short last batch: such models get every batch padded to batch_size with silent chunks instead.
        self.pad_batches = bool(getattr(model, "fused", False))
        self._in: Tensor | None = None  # (C, *) input samples from absolute index _in_start
        self._in_start = 0
        self._total = 0  # samples pushed so far
        self._next = 0  # start of the next chunk to cut
        self._covered = 0  # end of the last chunk cut (start + segment)
        self._pending: list[tuple[int, Tensor]] = []  # (start, chunk (C, L)) waiting for a full batch
        self._acc: Tensor | None = None  # (S, C, *) weighted sum of chunk outputs from _out_start
        self._wsum: Tensor | None = None  # (*,) sum of weights, same span as _acc
        self._out_start = 0  # absolute index of _acc[..., 0]; everything before it was returned
        self._finished = False
        self.on_device = False  # keep_on_device(): accumulate and return on the model's device
        self._nonfinite: Tensor | None = None  # on_device: a device flag, checked once in finish()

    def keep_on_device(self) -> OverlapAdd:
        """Accumulate on the model's device and return the pieces there; check the outputs' finiteness once,
        in ``finish()``, not after every batch. Then the host never waits for the accelerator: it queues the
        next batch while the current one runs, and whoever reads a piece moves it to the host (``separate_file``
        does, on its encode thread). Same arithmetic, so the same output. Call before the first push."""
        if self._acc is not None:
            raise RuntimeError("keep_on_device() after the first batch")
        self.on_device = True
        return self

    def push(self, x: Tensor) -> Tensor | None:
        """Add input samples x (C, n); return the newly finished output (S, C, m), or None if none yet."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        if x.dim() != 2:
            raise ValueError(f"expected (channels, samples), got shape {tuple(x.shape)}")
        if x.shape[-1] == 0:
            return None
        self._in = x if self._in is None else torch.cat([self._in, x.to(self._in)], dim=-1)
        self._total += x.shape[-1]
        outs: list[Tensor] = []
        while self._next + self.segment <= self._total:
            self._cut()
            if len(self._pending) == self.batch_size:
                outs.append(self._run())
        self._trim_input()
        return torch.cat(outs, dim=-1) if outs else None

    def finish(self) -> Tensor | None:
        """Cut the remaining (zero-padded) chunks, run them, return the rest of the output (S, C, m)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        if self._total == 0:
            return None
        outs: list[Tensor] = []
        while self._covered < self._total:
            self._cut()
            if len(self._pending) == self.batch_size:
                outs.append(self._run())
        if self._pending:
            outs.append(self._run())
        outs.append(self._emit(self._total))
        outs = [o for o in outs if o.shape[-1] > 0]
        self._in = None
        if self._nonfinite is not None and bool(self._nonfinite):  # on_device: the one wait for the device
            raise UserError(NONFINITE)
        return torch.cat(outs, dim=-1) if outs else None

    def run(self, x: Tensor) -> Tensor:
        """Push a whole signal x (C, N), N >= 1, and finish: returns (S, C, N) float32 on x's device."""
        if x.dim() == 2 and x.shape[-1] == 0:
            raise ValueError("the signal is empty (0 samples)")
        pieces = [self.push(x.float()), self.finish()]
        return torch.cat([p for p in pieces if p is not None], dim=-1)

    # -- internals --
    def _cut(self) -> None:
        assert self._in is not None
        a = self._next - self._in_start
        chunk = self._in[:, a : a + self.segment]  # (C, <=L)
        if chunk.shape[-1] < self.segment:  # last chunk: zero-pad (OFFICIAL_SPEC §7)
            chunk = torch.nn.functional.pad(chunk, (0, self.segment - chunk.shape[-1]))
        self._pending.append((self._next, chunk))
        self._covered = self._next + self.segment
        self._next += self.stride

    def _trim_input(self) -> None:
        # Keep only samples that a pending or future chunk still needs.
        assert self._in is not None
        keep_from = self._pending[0][0] if self._pending else self._next
        drop = min(keep_from, self._total) - self._in_start
        if drop > 0:
            self._in = self._in[:, drop:].clone()
            self._in_start += drop

    # no_grad, not inference_mode: models cache tensors lazily (windows, rotary tables); made under
    # inference_mode they would break a later training step that reuses them (e.g. validation mid-training).
    @torch.no_grad()
    def _run(self) -> Tensor:
        starts = [s for s, _ in self._pending]
        chunks = [c for _, c in self._pending]
        if self.pad_batches and len(chunks) < self.batch_size:
            chunks += [torch.zeros_like(chunks[0])] * (self.batch_size - len(chunks))
        batch = torch.stack(chunks)  # (B, C, L)
        if self.on_device and batch.device.type == "cpu" and self.device.type == "cuda":
            batch = batch.pin_memory()  # a copy the host does not wait for
        batch = batch.to(self.device, non_blocking=True)
        self._pending = []
        ctx: Any = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype is not None and self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with ctx:
            y = self._forward(batch)  # (B, S, C, L)
        if y.dim() != 4 or y.shape[0] != batch.shape[0] or y.shape[-1] != self.segment:
            raise ValueError(
                f"model must map (B, C, L) -> (B, S, C, L); got {tuple(batch.shape)} -> {tuple(y.shape)}"
            )
        y = y[: len(starts)]  # drop the padding chunks
        if self.on_device:
            bad = ~torch.isfinite(y).all()
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        elif not torch.isfinite(y).all():
            raise UserError(NONFINITE)
        if self.on_device:
            out_dev = self.device
        else:
            out_dev = self._in.device if self._in is not None else torch.device("cpu")
        y = y.float().to(out_dev)
        self.window = w = self.window.to(out_dev)
        end = starts[-1] + self.segment
        self._grow(end, y.shape[1], y.shape[2], out_dev)
        assert self._acc is not None and self._wsum is not None
        for b, s in enumerate(starts):
            a = s - self._out_start
            self._acc[..., a : a + self.segment] += y[b] * w
            self._wsum[a : a + self.segment] += w
        self.processed += len(starts)
        if self.callback is not None:
            self.callback(self._progress(end))
        # Samples before the next chunk's start are covered by every chunk that will ever touch them.
        return self._emit(self._next)

    def _forward(self, batch: Tensor) -> Tensor:
        """The model on batch (B, C, L); on the CPU, CPU_CHUNKS_PER_CALL chunks at a time (bounded memory).
        A model compiled for one batch shape (``pad_batches``) always gets the whole batch."""
        step = CPU_CHUNKS_PER_CALL if self.device.type == "cpu" and not self.pad_batches else len(batch)
        if len(batch) <= step:
            return self.model(batch)
        return torch.cat([self.model(part) for part in batch.split(step)])

    def _progress(self, end: int) -> dict[str, Any]:
        length = self._total if self._finished or self.length is None else max(self.length, self._total)
        total = max(num_chunks(length, self.segment, self.stride), self.processed)
        return {
            "processed": self.processed,
            "total": total,
            "position": min(end, length),
            "length": length,
            "finished": self._finished,
        }

    def _grow(self, end: int, stems: int, channels: int, device: torch.device) -> None:
        if self._acc is None or self._wsum is None:
            self._acc = torch.zeros(stems, channels, end - self._out_start, device=device)
            self._wsum = torch.zeros(end - self._out_start, device=device)
            return
        extra = end - self._out_start - self._acc.shape[-1]
        if extra > 0:
            self._acc = torch.nn.functional.pad(self._acc, (0, extra))
            self._wsum = torch.nn.functional.pad(self._wsum, (0, extra))

    def _emit(self, upto: int) -> Tensor:
        """Return the finished samples [out_start, upto) and drop them from the accumulator."""
        if self._acc is None or self._wsum is None:
            raise RuntimeError("no chunk has been processed")
        n = max(0, min(upto, self._total) - self._out_start)
        out = self._acc[..., :n] / self._wsum[:n]  # (S, C, n); wsum > 0 wherever a chunk landed
        self._acc = self._acc[..., n:].clone()
        self._wsum = self._wsum[n:].clone()
        self._out_start += n
        return out


# ---- in memory -------------------------------------------------------------------------------------


def apply_model(
    model: nn.Module,
    mix: Tensor,
    *,
    segment: int,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    transition: Transition = "linear",
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Separate ``mix`` (C, N) chunk by chunk; returns (S, C, N) float32 on ``mix``'s device.

    ``segment``: chunk length in samples (8 s = 352800 at 44.1 kHz is the paper's). ``overlap``: fraction of a
    chunk shared with the next (0 = the paper's plain concatenation). ``dtype``: autocast dtype (e.g.
    torch.bfloat16) or None for full precision. Chunks go to the model's device ``batch_size`` at a time;
    the model should already be in eval mode. ``callback``: progress after every batch (``OverlapAdd``).
    """
    if mix.dim() != 2:
        raise ValueError(f"mix must be (channels, samples), got shape {tuple(mix.shape)}")
    if mix.shape[-1] == 0:
        raise ValueError("mix is empty (0 samples)")
    engine = OverlapAdd(
        model,
        segment=segment,
        overlap=overlap,
        batch_size=batch_size,
        transition=transition,
        dtype=dtype,
        callback=callback,
        length=mix.shape[-1],
    )
    return engine.run(mix)
