"""Model-agnostic chunked inference: cut a long signal into chunks, run them in batches, stitch them back.

Any ``nn.Module`` mapping ``(B, C, L) -> (B, S, C, L)`` works (S stems). Two ways of stitching:

- ``overlap > 0`` (``bsmamba2 separate``'s default 0.5): consecutive chunks overlap and are cross-faded with
  a trapezoid window (``transition="linear"``) or averaged (``"none"``); every output sample is the
  window-weighted mean of the chunks covering it, so an identity model returns its input exactly.
- ``overlap = 0`` (``bsmamba2 evaluate``'s default): the paper's plain concatenation (OFFICIAL_SPEC §7):
  chunks of ``segment`` samples, the last one zero-padded, outputs concatenated and trimmed.

``OverlapAdd`` is the streaming engine (push blocks in, get finished samples out; memory bounded by a few
chunks); ``apply_model`` runs it over a tensor in memory and ``apply_file`` over a sound file on disk, with
streaming resampling on both sides and incremental atomic writes, so a one-hour file needs no more memory
than a one-minute one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor, nn
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.atomic import temp_beside
from bsmamba2.errors import AudioError, UserError

log = logging.getLogger(__name__)

Transition = Literal["linear", "none"]
TRANSITIONS = ("linear", "none")


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
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        segment: int,
        overlap: float = 0.5,
        batch_size: int = 4,
        transition: Transition = "linear",
        dtype: torch.dtype | None = None,
        progress: tqdm | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.segment = int(segment)
        self.stride = chunk_stride(self.segment, overlap)
        self.batch_size = batch_size
        self.dtype = dtype
        self.progress = progress
        self.window = chunk_window(self.segment, self.stride, transition)  # (L,)
        self.device = model_device(model)
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
        return torch.cat(outs, dim=-1) if outs else None

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
        batch = torch.stack([c for _, c in self._pending]).to(self.device, non_blocking=True)  # (B, C, L)
        self._pending = []
        ctx: Any = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype is not None and self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with ctx:
            y = self.model(batch)  # (B, S, C, L)
        if y.dim() != 4 or y.shape[0] != batch.shape[0] or y.shape[-1] != self.segment:
            raise ValueError(
                f"model must map (B, C, L) -> (B, S, C, L); got {tuple(batch.shape)} -> {tuple(y.shape)}"
            )
        if not torch.isfinite(y).all():
            raise UserError("the model produced NaN/Inf values (try --precision fp32)")
        out_dev = self._in.device if self._in is not None else torch.device("cpu")
        y = y.float().to(out_dev)
        w = self.window.to(out_dev)
        end = starts[-1] + self.segment
        self._grow(end, y.shape[1], y.shape[2], out_dev)
        assert self._acc is not None and self._wsum is not None
        for b, s in enumerate(starts):
            a = s - self._out_start
            self._acc[..., a : a + self.segment] += y[b] * w
            self._wsum[a : a + self.segment] += w
        if self.progress is not None:
            self.progress.update(len(starts))
        # Samples before the next chunk's start are covered by every chunk that will ever touch them.
        return self._emit(self._next)

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
    overlap: float = 0.5,
    batch_size: int = 4,
    transition: Transition = "linear",
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Tensor:
    """Separate ``mix`` (C, N) chunk by chunk; returns (S, C, N) float32 on ``mix``'s device.

    ``segment``: chunk length in samples (8 s = 352800 at 44.1 kHz is the paper's). ``overlap``: fraction of a
    chunk shared with the next (0 = the paper's plain concatenation). ``dtype``: autocast dtype (e.g.
    torch.bfloat16) or None for full precision. Chunks go to the model's device ``batch_size`` at a time;
    the model should already be in eval mode.
    """
    if mix.dim() != 2:
        raise ValueError(f"mix must be (channels, samples), got shape {tuple(mix.shape)}")
    if mix.shape[-1] == 0:
        raise ValueError("mix is empty (0 samples)")
    stride = chunk_stride(segment, overlap)
    bar = (
        tqdm(total=num_chunks(mix.shape[-1], segment, stride), unit="chunk", leave=False)
        if progress
        else None
    )
    try:
        engine = OverlapAdd(
            model,
            segment=segment,
            overlap=overlap,
            batch_size=batch_size,
            transition=transition,
            dtype=dtype,
            progress=bar,
        )
        pieces = [engine.push(mix.float()), engine.finish()]
    finally:
        if bar is not None:
            bar.close()
    return torch.cat([p for p in pieces if p is not None], dim=-1)


# ---- channel layouts ---------------------------------------------------------------------------------

# ITU-R BS.775 5.1 -> stereo (L R C LFE Ls Rs, the WAV/FLAC channel order), LFE dropped, normalised so a
# full-scale signal on every channel cannot exceed full scale.
_DOWNMIX_51 = np.array(
    [
        [1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0],
        [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071],
    ],
    dtype=np.float32,
) / np.float32(1.0 + 0.7071 + 0.7071)


def downmix(x: np.ndarray) -> np.ndarray:
    """(C, N) with C > 2 -> (2, N) stereo.

    6 channels are treated as 5.1 (L R C LFE Ls Rs) and mixed with the ITU-R BS.775 coefficients (centre and
    surrounds at -3 dB, LFE dropped, scaled by 1/2.414 so nothing clips). Any other count: even-numbered
    channels (0, 2, ...) are averaged into the left, odd-numbered into the right.
    """
    c = x.shape[0]
    if c <= 2:
        return x
    if c == 6:
        return _DOWNMIX_51 @ x
    return np.stack([x[0::2].mean(axis=0), x[1::2].mean(axis=0)]).astype(np.float32)


def output_channels(in_channels: int, allow_downmix: bool, name: str = "audio") -> int:
    """Channels of the written outputs: the input's (1 or 2), or 2 after a downmix; error for >2 otherwise."""
    if in_channels <= 2:
        return in_channels
    if not allow_downmix:
        raise AudioError(f"{name}: has {in_channels} channels; pass --downmix to mix it down to stereo first")
    return 2


def to_layout(x: np.ndarray, channels: int) -> np.ndarray:
    """(C, N) -> (channels, N): downmix beyond stereo, then mono<->stereo (duplicate / average)."""
    if x.shape[0] > 2:
        x = downmix(x)
    return audio.convert_channels(x, channels)


def residual_name(stems: Sequence[str]) -> str | None:
    """Name of ``mixture - stem`` written for a single-stem model ("instrumental" for vocals), else None."""
    if len(stems) != 1:
        return None
    return "instrumental" if stems[0] == "vocals" else f"no_{stems[0]}"


def model_io(model: nn.Module) -> tuple[tuple[str, ...], int, int]:
    """(stems, sample_rate, audio_channels) of a model carrying a ``cfg`` (ModelConfig-like)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError("model needs a .cfg with stems, sample_rate and audio_channels")
    return tuple(cfg.stems), int(cfg.sample_rate), int(cfg.audio_channels)


def check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or Inf samples")


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad the last axis to exactly n (resampling round-trips can be off by a sample)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


# ---- incremental atomic writer -----------------------------------------------------------------------


class AtomicWriter:
    """Write a sound file block by block into a hidden temp file beside it; ``commit()`` renames it into
    place, ``abort()`` deletes it, so a failure never leaves a partial output. PCM output is clipped to
    [-1, 1] (libsndfile would wrap around otherwise); the number of clipped samples is counted."""

    def __init__(self, path: Path, sample_rate: int, channels: int, subtype: str | None = None) -> None:
        self.path = Path(path)
        subtype = audio.SUBTYPES.get(subtype, subtype) if subtype is not None else None
        fmt = self.path.suffix.lstrip(".").upper() or "WAV"
        self.clip = subtype is None or subtype.startswith("PCM")
        self.clipped = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_beside(self.path)
        except OSError as e:
            raise UserError(f"{self.path.parent}: cannot write output ({e.strerror or e})") from None
        try:
            self._f = sf.SoundFile(
                str(self.tmp), "w", samplerate=sample_rate, channels=channels, subtype=subtype, format=fmt
            )
        except Exception as e:  # soundfile raises several types for unsupported format/subtype pairs
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"{self.path}: cannot write this format ({audio._short(e)})") from None

    def write(self, block: np.ndarray) -> None:
        """Append (C, n) float32 samples."""
        if self.clip:
            over = np.abs(block) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                block = np.clip(block, -1.0, 1.0)
        try:
            self._f.write(np.ascontiguousarray(block.T))
        except Exception as e:
            raise UserError(f"{self.path}: cannot write output ({audio._short(e)})") from None

    def commit(self) -> Path:
        self._f.close()
        os.replace(self.tmp, self.path)
        if self.clipped:
            log.warning(
                "%s: %d samples clipped to [-1, 1] (use --bit-depth float to keep them)",
                self.path,
                self.clipped,
            )
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()
        self.tmp.unlink(missing_ok=True)


# ---- from disk to disk -------------------------------------------------------------------------------


class _Resampler:
    """Streaming soxr resampler over (C, n) blocks; identity when the rates match. The concatenated output
    equals ``audio.resample`` of the whole signal (soxr streams are delay-compensated)."""

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.stream = (
            soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")
            if rate_in != rate_out
            else None
        )
        self.channels = channels

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)  # (n', C)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, self.channels).T)


def _blocks(path: Path, frames: int, block: int) -> Iterator[np.ndarray]:
    """(C, n) float32 blocks of a file in its own rate, read with seeks so memory stays flat."""
    start = 0
    while start < frames:
        x, _ = audio.read(path, start=start, frames=min(block, frames - start))
        if x.shape[-1] == 0:  # header over-reported the length
            return
        check_finite(x, str(path))
        start += x.shape[-1]
        yield x


def apply_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    outputs: Mapping[str, str | os.PathLike[str]],
    *,
    segment: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    transition: Transition = "linear",
    dtype: torch.dtype | None = None,
    subtype: str | None = None,
    allow_downmix: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Separate a sound file streaming from disk to disk; returns {name: written path}.

    ``outputs`` maps output names (the model's stems, plus ``residual_name(stems)`` = mixture - stem for a
    single-stem model) to file paths; the format follows each path's suffix. The input is read in blocks,
    resampled to the model's rate, separated with ``OverlapAdd`` (``segment`` in model samples), resampled
    back and written at the input's rate with the input's channel count (mono in, mono out; more than two
    channels only with ``allow_downmix``, then stereo out). Every output goes to a temp file renamed into
    place at the end; on any error the temp files are removed.
    """
    p = Path(path)
    stems, model_rate, model_channels = model_io(model)
    resid = residual_name(stems)
    known = (*stems, *([resid] if resid else []))
    unknown = [k for k in outputs if k not in known]
    if unknown:
        raise UserError(f"unknown output(s) {', '.join(unknown)}; this model gives {', '.join(known)}")
    if not outputs:
        return {}
    meta = audio.info(p)
    out_ch = output_channels(meta.channels, allow_downmix, str(p))
    rate = meta.sample_rate
    # Model-rate samples per block: whole batches of chunks, so the model always gets full batches.
    stride = chunk_stride(segment, overlap)
    block = max(1, round(stride * batch_size * rate / model_rate))
    model_frames = max(1, round(meta.frames * model_rate / rate))

    writers: dict[str, AtomicWriter] = {}
    bar = tqdm(
        total=num_chunks(model_frames, segment, stride), unit="chunk", leave=False, disable=not progress
    )
    try:
        for name, out_path in outputs.items():
            writers[name] = AtomicWriter(Path(out_path), rate, out_ch, subtype)
        engine = OverlapAdd(
            model,
            segment=segment,
            overlap=overlap,
            batch_size=batch_size,
            transition=transition,
            dtype=dtype,
            progress=bar,
        )
        to_model = _Resampler(rate, model_rate, model_channels)
        from_model = _Resampler(model_rate, rate, len(stems) * out_ch)
        mix_fifo: list[np.ndarray] = []  # input in the output layout, not yet matched by output samples
        written = 0

        def emit(y: Tensor | None, last: bool = False) -> None:
            nonlocal written
            ys = np.zeros((len(stems) * out_ch, 0), np.float32)
            if y is not None:
                y_np = y.cpu().numpy()  # (S, C_model, m)
                y_np = np.stack([audio.convert_channels(s, out_ch) for s in y_np])  # (S, out_ch, m)
                ys = y_np.reshape(len(stems) * out_ch, -1)
            if y is not None or last:
                ys = from_model(ys, last=last)  # (S * out_ch, k) at the input's rate
            if last:
                ys = fit_length(ys, meta.frames - written)  # exact input length
            ys = ys[:, : meta.frames - written]
            k = ys.shape[-1]
            if k == 0:
                return
            est = ys.reshape(len(stems), out_ch, k)
            for i, s in enumerate(stems):
                if s in writers:
                    writers[s].write(est[i])
            if resid is not None:
                mix = _take(mix_fifo, k, out_ch)
                if resid in writers:
                    writers[resid].write(mix - est[0])  # exact complement at the input's rate
            written += k

        for x in _blocks(p, meta.frames, block):
            x_out = to_layout(x, out_ch)  # (out_ch, n): what the outputs are compared against
            mix_fifo.append(x_out)
            x_model = to_model(audio.convert_channels(x_out, model_channels))
            emit(engine.push(torch.from_numpy(x_model)))
        tail = to_model(np.zeros((model_channels, 0), np.float32), last=True)  # soxr holds back a few ms
        emit(engine.push(torch.from_numpy(tail)))
        emit(engine.finish(), last=True)
        return {name: w.commit() for name, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()


def _take(fifo: list[np.ndarray], k: int, channels: int) -> np.ndarray:
    """Pop the first k samples (C, k) from a FIFO of (C, n) blocks, zero-padding if it runs dry."""
    parts: list[np.ndarray] = []
    need = k
    while need > 0 and fifo:
        head = fifo[0]
        if head.shape[-1] <= need:
            parts.append(fifo.pop(0))
            need -= head.shape[-1]
        else:
            parts.append(head[:, :need])
            fifo[0] = head[:, need:]
            need = 0
    if need > 0:
        parts.append(np.zeros((channels, need), np.float32))
    return np.concatenate(parts, axis=-1)
