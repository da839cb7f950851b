"""The Python API: ``Separator`` wraps a model with its inference settings.

>>> from bsmamba2.api import Separator
>>> sep = Separator.from_pretrained()                     # bundled model, best device and precision
>>> stems = sep.separate(waveform, sample_rate=48000)     # {"vocals": (C, N), "instrumental": (C, N)}
>>> sep.separate_file("song.flac", "separated/")          # separated/song/{vocals,instrumental}.wav

Inputs come at any sample rate and in mono or stereo; outputs come back in the same rate and layout. A
single-stem vocals model also yields "instrumental" = mixture - vocals, computed at the input's rate so the
two outputs add up to the input exactly.

Files go to ``out_dir/<track>/<stem>.<format>`` (track: the input's name without suffix, or ``track=``),
as ``bsmamba2 separate`` writes them, with a ``bsmamba2.json`` sidecar recording what made each output
(:mod:`bsmamba2.provenance`). An existing output is kept only when its input, model and settings all match;
otherwise it is made again and the log says why.

Progress: ``Separator(..., callback=fn)`` calls ``fn(info)`` after every batch of chunks, with
``info = {"processed", "total", "position", "length", "sample_rate", "path"}`` (chunk counts; the position
reached and the length, in model samples at ``sample_rate``; the input file, or None for a waveform), so a
terminal bar (``bsmamba2.progress.ChunkBar``) and a web page draw from the same hook.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bsmamba2 import pipeline, provenance
from bsmamba2.apply import DEFAULT_OVERLAP, OverlapAdd, ProgressCallback, Transition
from bsmamba2.audio import channels_first, from_channels_first
from bsmamba2.audio.formats import BIT_DEPTHS as BIT_DEPTHS  # the API's name for the choices, too
from bsmamba2.audio.formats import FORMATS, check_format
from bsmamba2.device import describe, log_once, resolve_device, resolve_precision
from bsmamba2.errors import AudioError, CheckpointError, UserError
from bsmamba2.progress import ChunkBar

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.safetensors"
ENGINES = ("auto", "torch", "onnx")  # onnx: an exported file run by ONNX Runtime (bsmamba2.onnx.runtime)


class Separator:
    """A model plus how to run it: device, autocast dtype, chunk length / overlap / batch size.

    Build one with ``from_pretrained``; or wrap any model mapping (B, C, L) -> (B, S, C, L) that carries a
    ``cfg`` with ``stems``, ``sample_rate`` and ``audio_channels``. ``callback``: progress after every batch
    of chunks (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        segment: float = 8.0,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 4,
        transition: Transition = "linear",
        callback: ProgressCallback | None = None,
        model_id: str | None = None,
    ) -> None:
        if segment <= 0:
            raise UserError(f"segment must be positive (seconds), got {segment}")
        if not 0.0 <= overlap < 1.0:
            raise UserError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        self.io = pipeline.ModelIO.of(model)
        self.model_stems, self.sample_rate, self.model_channels = (
            self.io.stems,
            self.io.sample_rate,
            self.io.channels,
        )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype
        self.segment = segment
        self.overlap = overlap
        self.batch_size = batch_size
        self.transition: Transition = transition
        self.callback = callback
        self.residual = self.io.residual
        self._model_id = model_id  # the model file's digest (from_pretrained), else computed on first use

    @property
    def model_id(self) -> str:
        """The model's identity in output records: its file's digest, or a digest of its weights."""
        if self._model_id is None:
            self._model_id = provenance.module_digest(self.model)
        return self._model_id

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        segment: float = 8.0,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 4,
        backend: str = "auto",
        callback: ProgressCallback | None = None,
        fused: bool = False,
        engine: str = "auto",
    ) -> Separator:
        """Load a model file (ours, an official checkpoint, or an ONNX export); ``None`` = the bundled model.

        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:1", "mps". precision: "auto" (bf16
        where native, else fp32), "fp32", "bf16", "fp16". segment: chunk length in seconds; overlap: fraction
        of a chunk shared with the next (0 = plain concatenation, as in the paper). backend: the Mamba2 scan,
        "auto" (the fused Triton kernel on CUDA, the fast plain-PyTorch scan elsewhere), "torch" (the
        reference everywhere) or "triton". callback: progress after every batch of chunks. fused: compile the
        memory-bound glue around every Mamba2 scan (torch.compile; the first run of a shape compiles, later
        processes reuse torch's on-disk cache). Off by default: on an H200 it made the bundled model alone 2.4x
        faster (738x vs 309x real time) but cost ~12 s of tracing and compilation in every new process
        (BENCHMARKS.md), more than it saves on a folder of ten songs.
        engine: "torch",
        "onnx" (an exported file run by ONNX Runtime, ``bsmamba2.onnx``), or "auto" (onnx for a .onnx path).
        """
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
        if engine == "onnx" or (engine == "auto" and str(path).lower().endswith(".onnx")):
            from bsmamba2.onnx.runtime import load_engine  # onnxruntime is optional: only imported here

            dev = resolve_device(device)
            onnx_model = load_engine(path, dev, precision)
            log_once(f"model {Path(str(path)).name} on {dev} through onnxruntime ({onnx_model.providers[0]})")
            return cls(
                onnx_model,
                device=dev,
                segment=segment,
                overlap=overlap,
                batch_size=batch_size,
                callback=callback,
                model_id=provenance.file_digest(str(path)),
            )
        from bsmamba2.checkpoints import load_model  # the model stack is only needed here

        if path is None:
            path = DEFAULT_MODEL
            if not path.exists():
                raise CheckpointError(
                    f"no bundled model at {path} (this build ships without weights); pass a model file with --model"
                )
        from bsmamba2.model.mixers.ssd import resolve_backend

        dev = resolve_device(device)
        resolve_precision(dev, precision)  # a bad name fails before the model loads
        try:
            backend = resolve_backend(backend, dev)
        except ValueError as e:
            raise UserError(f"backend: {e}") from None
        model = load_model(path, device=dev, backend=backend, fused=fused)
        dtype = resolve_precision(dev, precision, model=model)  # auto on CPU: the measured faster one
        log_once(f"model {Path(path).name} on {describe(dev, dtype)}")
        return cls(
            model,
            device=dev,
            dtype=dtype,
            segment=segment,
            overlap=overlap,
            batch_size=batch_size,
            callback=callback,
            model_id=provenance.file_digest(path),
        )

    def with_segment(self, segment: float) -> Separator:
        """The same model and settings with another chunk length (seconds), e.g. for the input-length study."""
        return Separator(
            self.model,
            device=self.device,
            dtype=self.dtype,
            segment=segment,
            overlap=self.overlap,
            batch_size=self.batch_size,
            transition=self.transition,
            callback=self.callback,
            model_id=self._model_id,
        )

    @property
    def stems(self) -> tuple[str, ...]:
        """Names of the outputs: the model's stems, plus "instrumental" for a vocals-only model."""
        return self.io.outputs

    @property
    def segment_samples(self) -> int:
        return max(1, round(self.segment * self.sample_rate))

    def separate(
        self,
        waveform: Tensor | np.ndarray,
        sample_rate: int,
        *,
        layout: str | None = None,
        downmix: bool = False,
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """Separate a waveform held in memory.

        waveform: (C, N), (N, C) or (N,), NumPy or torch, float or integer PCM (int8/int16/int32/uint8,
        scaled to [-1, 1)), any rate, C = 1 or 2 (more with ``downmix``: mixed to stereo). layout: "cf" for
        (C, N), "fc" for (N, C); None = the axis of size 1 or 2 is channels when the other is longer (other
        shapes, e.g. (2, 2) or (6, N), raise UserError asking for ``layout=``). Returns {name: float32 CPU
        tensor} in the input's layout and rate (stereo after a downmix).
        """
        if isinstance(waveform, Tensor):
            w = waveform.detach().cpu()
            waveform = (w.float() if w.dtype == torch.bfloat16 else w).numpy()  # NumPy has no bfloat16
        x, found = channels_first(np.asarray(waveform), layout, allow_downmix=downmix)  # (C, N) float32
        if x.shape[-1] == 0:
            raise AudioError("waveform is empty (0 samples)")
        if sample_rate <= 0:
            raise AudioError(f"sample_rate must be positive, got {sample_rate}")
        with self._engines(progress, None) as engines:
            result = pipeline.separate_array(engines, self.io, x, sample_rate, allow_downmix=downmix)
        return {k: torch.from_numpy(from_channels_first(v, found)) for k, v in result.items()}

    def output_paths(
        self, out_dir: str | os.PathLike[str], fmt: str = "wav", stems: Sequence[str] | None = None
    ) -> dict[str, Path]:
        """{name: out_dir/name.fmt} for the requested outputs (all by default)."""
        names = self.check_stems(stems)
        if fmt not in FORMATS:
            raise UserError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        return {n: Path(out_dir) / f"{n}.{fmt}" for n in names}

    def check_stems(self, stems: Sequence[str] | None) -> tuple[str, ...]:
        """Validate a stem selection against ``self.stems``; None = all."""
        if not stems:
            return self.stems
        bad = [s for s in stems if s not in self.stems]
        if bad:
            raise UserError(f"unknown stem(s) {', '.join(bad)}; this model gives {', '.join(self.stems)}")
        return tuple(dict.fromkeys(stems))

    def separate_file(
        self,
        path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        track: str | None = None,
        format: str = "wav",
        bit_depth: str = "24",
        bitrate: int | None = None,
        downmix: bool = False,
        overwrite: bool = False,
        stems: Sequence[str] | None = None,
        progress: bool = False,
    ) -> dict[str, Path]:
        """Separate one sound file into ``out_dir/<track>/<stem>.<format>``; returns {name: path} of the outputs.

        track: the folder's name (default: the input's name without suffix). Streams from disk to disk
        (memory does not grow with the file's length). An existing output is kept when the folder's sidecar
        says it was made from this input, model and settings (all of them), unless ``overwrite``; otherwise
        it is made again. format: "wav", "flac" or "mp3". bit_depth (WAV, FLAC): "16", "24" or "float" (WAV
        only). bitrate (MP3 only): constant, in kbps (default 320).
        """
        plan = self.plan_file(
            path,
            out_dir,
            track=track,
            format=format,
            bit_depth=bit_depth,
            bitrate=bitrate,
            downmix=downmix,
            overwrite=overwrite,
            stems=stems,
        )
        return self.run_plan(plan, progress=progress)

    def plan_file(
        self,
        path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        track: str | None = None,
        format: str = "wav",
        bit_depth: str = "24",
        bitrate: int | None = None,
        downmix: bool = False,
        overwrite: bool = False,
        stems: Sequence[str] | None = None,
    ) -> provenance.Plan:
        """What ``separate_file`` would do with these arguments (checks them; computes nothing; logs why
        existing outputs are kept or made again). ``plan.up_to_date``: every output can be kept."""
        check_format(format, bit_depth, bitrate)
        source = Path(path)
        folder = Path(out_dir) / (track if track is not None else source.stem)
        settings = {
            "format": format,
            "bit_depth": bit_depth,
            "bitrate": bitrate,
            "downmix": downmix,
            "segment": self.segment,
            "overlap": self.overlap,
            "transition": self.transition,
            "precision": str(self.dtype or torch.float32).removeprefix("torch."),
        }
        recipe = provenance.Recipe(provenance.input_identity(source), self.model_id, settings)
        targets = self.output_paths(folder, format, stems)
        plan = provenance.plan(source, folder, recipe, targets, overwrite=overwrite)
        if plan.up_to_date:
            log.info("%s: outputs up to date in %s, skipped (--overwrite to redo)", source, folder)
        for reason in dict.fromkeys(plan.reasons.values()):
            names = [plan.todo[n].name for n, r in plan.reasons.items() if r == reason]
            log.info("%s: making %s again (%s)", source, ", ".join(names), reason)
        return plan

    def run_plan(self, plan: provenance.Plan, *, progress: bool = False) -> dict[str, Path]:
        """Make a plan's ``todo`` outputs and record them in the folder's sidecar; returns all its targets."""
        if plan.up_to_date:
            return plan.targets
        settings = plan.recipe.settings
        with self._engines(progress, plan.source) as engines:
            written = pipeline.separate_file(
                engines,
                self.io,
                plan.source,
                plan.todo,
                subtype=str(settings["bit_depth"]),
                bitrate=settings["bitrate"],
                allow_downmix=bool(settings["downmix"]),
            )
        provenance.record(plan, written)
        return plan.targets

    @contextlib.contextmanager
    def _engines(self, progress: bool, path: Path | None) -> Iterator[pipeline.EngineFactory]:
        """An engine factory for one separation, its progress going to ``self.callback`` (tagged with the
        model rate and ``path``) and, with ``progress``, to a terminal bar closed when the block ends."""
        bar = ChunkBar() if progress else None
        sinks = [cb for cb in (self.callback, bar) if cb is not None]

        def report(info: dict[str, Any]) -> None:
            tagged = {**info, "sample_rate": self.sample_rate, "path": None if path is None else str(path)}
            for cb in sinks:
                cb(tagged)

        def make(length: int) -> OverlapAdd:
            return OverlapAdd(
                self.model,
                segment=self.segment_samples,
                overlap=self.overlap,
                batch_size=self.batch_size,
                transition=self.transition,
                dtype=self.dtype,
                callback=report if sinks else None,
                length=length,
            )

        try:
            yield make
        finally:
            if bar is not None:
                bar.close()
