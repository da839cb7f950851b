"""Separation end to end: input samples at any rate and layout -> the chunk engine -> outputs at the input's.

Composed from the audio package (conversion, block reading, atomic writers) and the chunk engine
(:class:`bsmamba2.apply.OverlapAdd`); ``Separator`` (:mod:`bsmamba2.api`) holds the settings and calls
these two functions:

- :func:`separate_array`: a waveform held in memory;
- :func:`separate_file`: a sound file streamed from disk to disk (read blocks -> resample to the model's
  rate -> engine -> resample back -> write), so memory stays flat in the file's length.

Both take an ``EngineFactory``: given the signal's length in model samples, a fresh ``OverlapAdd`` with the
model and the chunk settings (and the progress callback) already bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bsmamba2.apply import OverlapAdd
from bsmamba2.atomic import signals_deferred
from bsmamba2.audio import (
    AtomicWriter,
    Resampler,
    SampleFifo,
    check_finite,
    convert_channels,
    fit_length,
    info,
    output_channels,
    read_blocks,
    resample,
    to_layout,
)
from bsmamba2.audio.wav import truncated_wav
from bsmamba2.batchrun import Background, BackgroundWriter, Inline, Prefetch, StageTimes, current_clock, timed
from bsmamba2.errors import UserError
from bsmamba2.stems import add_residual, output_names, residual_name

log = logging.getLogger(__name__)

EngineFactory = Callable[[int], OverlapAdd]
IO_THREADS_ENV = "BSMAMBA2_IO_THREADS"  # "0": separate_file decodes and encodes on the calling thread


@dataclass(frozen=True)
class ModelIO:
    """What a model takes and gives: its stems, sample rate and channel count."""

    stems: tuple[str, ...]
    sample_rate: int
    channels: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelIO:
        """Read them from a model carrying a ``cfg`` (ModelConfig-like)."""
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise TypeError("model needs a .cfg with stems, sample_rate and audio_channels")
        return cls(tuple(cfg.stems), int(cfg.sample_rate), int(cfg.audio_channels))

    @property
    def residual(self) -> str | None:
        return residual_name(self.stems)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The stems plus the residual of a single-stem model."""
        return output_names(self.stems)


def separate_array(
    engine: EngineFactory, io: ModelIO, x: np.ndarray, sample_rate: int, *, allow_downmix: bool = False
) -> dict[str, np.ndarray]:
    """Separate x (C, N) float32 at ``sample_rate``; returns {output: (C_out, N)} at that rate.

    C_out is C for mono or stereo input; more than two channels are mixed to stereo with ``allow_downmix``
    (else AudioError). The residual is computed at the input's rate, so it adds up with its stem to the
    (laid out) input exactly.
    """
    check_finite(x, "waveform")
    out_ch = output_channels(x.shape[0], allow_downmix, "waveform")
    x_out = to_layout(x, out_ch)  # (out_ch, N) at the input rate
    x_model = resample(convert_channels(x_out, io.channels), sample_rate, io.sample_rate)  # (C_model, N')
    y = (
        engine(x_model.shape[-1]).run(torch.from_numpy(np.ascontiguousarray(x_model))).numpy()
    )  # (S, C_model, N')
    n = x.shape[-1]
    result: dict[str, np.ndarray] = {}
    for name, stem in zip(io.stems, y, strict=True):
        s = resample(convert_channels(stem, out_ch), io.sample_rate, sample_rate)
        result[name] = fit_length(s, n)
    return add_residual(x_out, result, io.stems)


def separate_file(
    engine: EngineFactory,
    io: ModelIO,
    path: str | os.PathLike[str],
    outputs: Mapping[str, str | os.PathLike[str]],
    *,
    subtype: str | None = None,
    bitrate: int | None = None,
    allow_downmix: bool = False,
    threads: bool | None = None,
) -> dict[str, Path]:
    """Separate a sound file streaming from disk to disk; returns {output: written path}.

    ``outputs`` maps output names (``io.outputs``) to file paths; the format follows each path's suffix,
    ``subtype`` is a soundfile subtype or "16", "24", "float"; ``bitrate`` (kbps) is MP3's. Outputs are at
    the input's rate with its channel count (mono in, mono out; more than two channels only with
    ``allow_downmix``, then stereo).
    Every output goes to a temp file renamed into place at the end; on any error (KeyboardInterrupt
    included) the temp files are removed, and so are the output folders this call created.
    ``threads``: decode the next block and encode the last one on threads while the model runs
    (:mod:`bsmamba2.batchrun`; the outputs are bit-identical either way); None: yes, unless the environment
    sets ``BSMAMBA2_IO_THREADS=0`` (for benchmarks).
    """
    if threads is None:
        threads = os.environ.get(IO_THREADS_ENV, "1") != "0"
    p = Path(path)
    unknown = [k for k in outputs if k not in io.outputs]
    if unknown:
        raise UserError(f"unknown output(s) {', '.join(unknown)}; this model gives {', '.join(io.outputs)}")
    if not outputs:
        return {}
    meta = info(p)
    if truncated_wav(p):
        log.warning("%s: the file is shorter than its header says (truncated?); separating what is there", p)
    out_ch = output_channels(meta.channels, allow_downmix, str(p))
    rate = meta.sample_rate
    clock = current_clock()
    with timed(clock, "model"):  # the first engine may allocate on the device
        chunks = engine(max(1, round(meta.frames * io.sample_rate / rate)))
    on_gpu = threads and chunks.device.type == "cuda"
    if on_gpu:
        # The engine's pieces stay on the GPU, each copied to the host in stream order as it is made, and
        # the encode thread waits for the copy: the model's thread queues batch after batch without waiting
        # for one to finish (the "model" stage then counts the host's time; the GPU's shows in "to host").
        chunks.keep_on_device()
    # Input-rate samples per block: whole batches of chunks, so the model always gets full batches.
    block = max(1, round(chunks.stride * chunks.batch_size * rate / io.sample_rate))
    writers: dict[str, BackgroundWriter] = {}
    created = _missing_folders(Path(o).parent for o in outputs.values())
    source = _decoded_blocks(p, meta.frames, block, out_ch, rate, io, clock)
    encode = Background() if threads else Inline()
    try:
        with signals_deferred():  # each temp file is in `writers` before a Ctrl-C can land
            for name, out_path in outputs.items():
                raw = AtomicWriter(Path(out_path), rate, out_ch, subtype, bitrate)
                writers[name] = BackgroundWriter(raw, clock, threads=threads)
        sink = _FileSink(writers, io, out_ch, rate, meta.frames, clock)
        with Prefetch(source) if threads else contextlib.nullcontext(source) as blocks:
            for x_out, x_model in blocks:
                if x_out is not None:  # None: the resampler's tail, no new input samples
                    encode.submit(sink.mix.push, x_out)
                with timed(clock, "model"):
                    y = chunks.push(torch.from_numpy(x_model))
                    piece = HostCopy(y) if on_gpu and y is not None else y
                encode.submit(sink.emit, piece, False)
        with timed(clock, "model"):
            y = chunks.finish()
        encode.submit(sink.emit, y, True)
        encode.join()
        for w in writers.values():  # each output closes on its own thread, all at once
            w.finish()
        written = {name: w.commit() for name, w in writers.items()}
        if clock is not None:
            clock.files += 1
        return written
    except BaseException:
        encode.close()  # no write may run while the temp files go
        for w in writers.values():
            w.abort()
        for folder in created:  # deepest first; a folder someone else filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _decoded_blocks(
    path: Path, frames: int, block: int, out_ch: int, rate: int, io: ModelIO, clock: StageTimes | None
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """The decode stage of :func:`separate_file`: (x_out (out_ch, n) laid out at the input rate, x_model
    (C_model, n') at the model's) per block of ``block`` input samples, then (None, the resampler's tail)."""
    to_model = Resampler(rate, io.sample_rate, io.channels)
    blocks = read_blocks(path, frames, block)
    while True:
        with timed(clock, "decode"):
            x = next(blocks, None)
            if x is None:
                tail = to_model(np.zeros((io.channels, 0), np.float32), last=True)  # soxr holds back a few ms
                break
            x_out = to_layout(x, out_ch)  # (out_ch, n): what the outputs are compared against
            x_model = to_model(convert_channels(x_out, io.channels))
        yield x_out, x_model
    yield None, tail


def _missing_folders(folders: Iterable[Path]) -> list[Path]:
    """The folders (and their missing parents) that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for folder in folders:
        for f in (folder, *folder.parents):
            if f.exists():
                break
            missing.add(f)
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


class HostCopy:
    """A CUDA piece of output (S, C, m) copied to pinned host memory, the copy queued on the piece's stream
    right behind the batches that made it; ``wait()`` returns the host tensor once the copy has landed.

    A plain ``.cpu()`` on the encode thread would queue its copy behind every batch the model's thread had
    queued meanwhile, so each piece would wait for later ones. Creating this does not wait for the device."""

    def __init__(self, y: Tensor) -> None:
        self.host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
        self.host.copy_(y, non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record(torch.cuda.current_stream(y.device))

    def wait(self) -> Tensor:
        self.done.synchronize()
        return self.host


class _FileSink:
    """The output side of :func:`separate_file`: model-rate stem blocks from the engine -> the outputs'
    layout and the input's rate -> the writers, with the residual taken against the matching input samples.
    Its seconds go to ``clock``: waiting for the device's pieces to "to host", the rest to "encode".
    """

    def __init__(
        self,
        writers: Mapping[str, BackgroundWriter],
        io: ModelIO,
        channels: int,
        rate: int,
        frames: int,
        clock: StageTimes | None = None,
    ) -> None:
        self.writers = writers
        self.stems = io.stems
        self.channels = channels
        self.frames = frames  # the input's length: the outputs get exactly as many samples
        self.clock = clock
        self.from_model = Resampler(io.sample_rate, rate, len(io.stems) * channels)
        self.mix = SampleFifo(channels)  # laid-out input not yet matched by output samples
        self.written = 0

    def emit(self, y: Tensor | HostCopy | None, last: bool = False) -> None:
        """Convert and write the engine's output y (S, C_model, m) (None: nothing new; ``last``: flush)."""
        if isinstance(y, HostCopy):
            with timed(self.clock, "to host"):
                y = y.wait()
        with timed(self.clock, "encode"):
            blocks = self._convert(None if y is None else y.cpu().numpy(), last)
        for name, w in self.writers.items():
            if blocks:
                w.write(blocks[name])

    def _convert(self, y: np.ndarray | None, last: bool) -> dict[str, np.ndarray]:
        """{output: (c, k)} at the input's rate for the model-rate stems y (S, C_model, m); {} if k = 0."""
        s, c = len(self.stems), self.channels
        ys = np.zeros((s * c, 0), np.float32)
        if y is not None:
            y_np = y if y.shape[1] == c else np.stack([convert_channels(stem, c) for stem in y])  # (S, c, m)
            ys = y_np.reshape(s * c, -1)
        if y is not None or last:
            ys = self.from_model(ys, last=last)  # (S * c, k) at the input's rate
        if last:
            ys = fit_length(ys, self.frames - self.written)  # exact input length
        ys = ys[:, : self.frames - self.written]
        k = ys.shape[-1]
        if k == 0:
            return {}
        est = ys.reshape(s, c, k)
        self.written += k
        return add_residual(self.mix.pop(k), dict(zip(self.stems, est, strict=True)), self.stems)
