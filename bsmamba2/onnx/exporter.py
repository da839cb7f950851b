"""Export a BandSplitSeparator's network to one self-describing ONNX file.

The graph (:class:`bsmamba2.onnx.graph.SpectralCore`) is captured with torch.export and translated by the
dynamo-based ``torch.onnx.export`` (onnxscript), batch and frame count dynamic. The TorchScript-based exporter
(``dynamo=False``) cannot do it: it bakes the reference SSD's Python choices on the sequence length (chunk
size, padding) into the graph for the traced example, and it emits a boolean EyeLike that ONNX Runtime has no
kernel for. The Mamba2 scans go through the export-friendly SSD (:mod:`bsmamba2.model.mixers.ssd_export`, the plain-PyTorch
chunked form without length branches); a model set up for a fused kernel (Triton) is switched to it, with a
log line, on a copy. The translated graph gets the exporter's own optimisation (``optimize=True``), run by
:mod:`bsmamba2.onnx.optimizer` (the same passes and graph, in a fraction of the time).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from bsmamba2.atomic import atomic_write
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.onnx.graph import INPUT, OUTPUT, SpectralCore, metadata
from bsmamba2.onnx.optimizer import optimize
from bsmamba2.onnx.runtime import INSTALL_HINT, OnnxModel

BACKEND = "export"  # the SSD the graph is traced through (bsmamba2.model.mixers.ssd_export)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # ONNX Runtime 1.14+ runs it
# The dynamo exporter writes opset 18 when asked for 17 (it does not convert down), so 18 is the floor.
MIN_OPSET = 18


class ExportError(UserError):
    """The model could not be exported, or the exported graph does not reproduce it."""


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(
            f"exporting to ONNX needs onnx and onnxscript, which are not installed: {INSTALL_HINT}"
        ) from None


def prepare(model: BandSplitSeparator) -> SpectralCore:
    """A CPU float32 eval copy of ``model`` with every Mamba2 scan on the export SSD, wrapped for export.

    The caller's model is left as it was. Any other backend (the Triton kernels cannot be traced into ONNX,
    the reference branches on the length) is replaced, and the switch is logged once.
    """
    if getattr(model, "backend", None) == "triton":
        log.info("ONNX export: the Triton kernels cannot be exported; switching to the plain-PyTorch SSD")
    # a fresh eager copy (no compiled glue: it does not export) on the export SSD, same weights
    core = build_model(model.cfg, backend=BACKEND, device="cpu")
    core.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return SpectralCore(core.eval()).eval()


def example_input(model: BandSplitSeparator, frames: int | None = None, batch: int = 2) -> torch.Tensor:
    """A random ``spec`` input (batch, c, f, frames, 2) for tracing or checking.

    The default frame count spans two chunks and a part of a third, so that tracing sees the general case
    (a count at or below one chunk would let the tracer specialise the chunk arithmetic to it).
    """
    cfg = model.cfg
    t = frames if frames is not None else 2 * cfg.mamba2.chunk_size + 5
    gen = torch.Generator().manual_seed(t)
    return torch.randn(batch, cfg.audio_channels, cfg.n_bins, t, 2, generator=gen)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter (missing torchvision ops, optimiser passes, deprecations)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(
    model: BandSplitSeparator,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    source: str = "",
    check: bool = True,
) -> Path:
    """Write ``model``'s network (STFT and iSTFT excluded) to ``path`` as ONNX, atomically; returns the path.

    Graph: ``spec`` float32 (b, c, f, t, 2) -> ``stems`` float32 (b, s, c, f, t, 2), b and t dynamic (see
    :mod:`bsmamba2.onnx.graph`); the config, stems, sample rate and STFT settings go into ``metadata_props``.
    ``source``: where the weights came from, recorded in the metadata. ``check``: run the written file in
    ONNX Runtime on a random input of a frame count off the chunk grid and raise ExportError unless it
    matches torch within 1e-4 of the output's scale.
    """
    if opset < MIN_OPSET:
        raise UserError(f"opset must be at least {MIN_OPSET}, got {opset}")
    _require_exporter()
    core = prepare(model)
    spec = example_input(model)
    dims = {INPUT: {0: torch.export.Dim("batch"), 3: torch.export.Dim("frames")}}
    p = Path(path)
    t0 = time.perf_counter()
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            core,
            (spec,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=dims,
            optimize=False,  # the same optimisation, run below without its quadratic matcher
            verbose=False,
        )
        assert program is not None
        t1 = time.perf_counter()
        optimize(program)
    log.debug("ONNX export: traced %.1f s, optimised %.1f s", t1 - t0, time.perf_counter() - t1)
    written = program.model.opset_imports.get("", opset)
    if written != opset:
        log.info("ONNX export: asked for opset %d, the exporter wrote opset %d", opset, written)
    program.model.metadata_props.update(metadata(model.cfg, source=source))
    with atomic_write(p) as tmp:  # a graph that fails its check never lands under ``path``
        program.save(tmp, external_data=False)
        if check:
            t2 = time.perf_counter()
            err = check_export(tmp, core, name=str(p))
            log.info(
                "ONNX export checked against torch: max error %.2e of the output's scale (%.1f s)",
                err,
                time.perf_counter() - t2,
            )
    return p


def check_export(
    path: str | os.PathLike[str], core: SpectralCore, frames: int | None = None, name: str | None = None
) -> float:
    """Relative max error of the file at ``path`` against ``core`` on one random input; ExportError > 1e-4.

    frames: the input's frame count (default: a single chunk plus a remainder, off the traced example's).
    name: the file's name in the error message (default ``path``).
    """
    cfg = core.model.cfg
    spec = example_input(core.model, frames if frames is not None else cfg.mamba2.chunk_size + 3, batch=1)
    with torch.no_grad():
        want = core(spec)
    got = OnnxModel(path).run_spec(spec)
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
    if not err <= 1e-4:
        raise ExportError(f"{name or path}: the exported graph differs from torch by {err:.2e} (relative)")
    return err
