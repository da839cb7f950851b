"""Options several subcommands share, each defined once, and their checks before any model is loaded.

This module does not import torch, so that a subcommand's ``--help`` stays fast (issue 12): the output
formats come from ``bsmamba2.audio.formats``; the device, precision and backend choices, the default
overlap and the engines are defined beside torch code (``bsmamba2.device``, the SSD backend registry,
``bsmamba2.apply``, ``bsmamba2.api``) and copied here, each held to its source by
``tests/test_cli_options.py``. Defaults that differ between commands are arguments (``evaluate`` chunks
without overlap, as the paper's evaluation; ``separate`` with a quarter chunk). :func:`check` turns every
bad value argparse cannot catch (a zero batch, a NaN segment, an unusable device) into a one-line
``UserError``; it imports torch, as the command is about to run.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from bsmamba2.audio import DEFAULT_MP3_BITRATE
from bsmamba2.audio.formats import BIT_DEPTHS, FORMATS, check_format
from bsmamba2.errors import UserError

DEFAULT_BIT_DEPTH = "24"  # wav / flac output of separate, demo and the API

DEFAULT_SEGMENT = 8.0
DEFAULT_BATCH_SIZE = 4
# Defaults of `separate` on a CUDA device (elsewhere: DEFAULT_BATCH_SIZE, eager glue). Each is a one-line
# switch, set from benchmarks/bench_cli.py on an H200 (BENCHMARKS.md, issue 12).
CUDA_BATCH_SIZE = 8  # ten 4-minute songs one at a time on an H200: 10.74 s at 8, 12.19 s at 4 (2026-12-01)
CUDA_FUSED = False

# Copies of choices defined beside torch code, for --help without torch (the test holds each to its source)
DEVICES = ("auto", "cpu", "cuda", "mps")  # bsmamba2.device.DEVICES
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # bsmamba2.device.PRECISIONS
BACKENDS = ("auto", "torch", "fast", "triton")  # bsmamba2.device.BACKENDS (the SSD backend registry)
BACKEND_HELP = (  # bsmamba2.device.BACKEND_HELP
    "Mamba2 scan: auto (fused Triton on CUDA, else fast), torch (the plain-PyTorch reference, any device), "
    "fast (plain PyTorch laid out for speed, any device), triton (fused kernels, CUDA)"
)
DEFAULT_OVERLAP = 0.25  # bsmamba2.apply.DEFAULT_OVERLAP
ENGINES = ("auto", "torch", "onnx")  # bsmamba2.api.ENGINES
MODEL_HELP = "model file (default: the bundled model)"


def add_model(parser: argparse._ActionsContainer, help: str = MODEL_HELP) -> None:
    """``-m/--model FILE`` (default None: the bundled model); ``parser`` may be an argument group."""
    parser.add_argument("-m", "--model", default=None, help=help)


def add_device(
    parser: argparse.ArgumentParser,
    *,
    precision_help: str = "autocast precision (default auto)",
    backend: bool = True,
) -> None:
    """``--device``, ``--precision`` and (with ``backend``) ``--backend``, all defaulting to auto."""
    parser.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)} or cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=precision_help)
    if backend:
        parser.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)


def add_chunking(
    parser: argparse.ArgumentParser,
    *,
    overlap: float,
    overlap_help: str,
    segments: bool = False,
    segment_help: str = f"chunk length in seconds (default {DEFAULT_SEGMENT:g})",
) -> None:
    """``--segment`` (one value, or with ``segments`` a list), ``--overlap`` / ``--no-overlap`` (default
    ``overlap``) and ``--batch-size``."""
    if segments:
        parser.add_argument("--segment", type=float, nargs="+", default=[DEFAULT_SEGMENT], help=segment_help)
    else:
        parser.add_argument("--segment", type=float, default=DEFAULT_SEGMENT, help=segment_help)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overlap", type=float, default=overlap, help=overlap_help)
    group.add_argument(
        "--no-overlap", dest="overlap", action="store_const", const=0.0,
        help="plain concatenation of chunks, as in the paper's evaluation",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
        help=f"chunks per forward pass (default {DEFAULT_BATCH_SIZE})",
    )  # fmt: skip


def add_output(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--bit-depth`` (wav, flac) and ``--bitrate`` (mp3) of written audio."""
    parser.add_argument("--format", default="wav", choices=FORMATS, help="output format (default wav)")
    parser.add_argument(
        "--bit-depth", default=None, choices=BIT_DEPTHS, help="wav/flac sample format (default 24)"
    )
    parser.add_argument(
        "--bitrate", type=int, default=None, metavar="KBPS",
        help=f"mp3 constant bitrate in kbps (default {DEFAULT_MP3_BITRATE})",
    )  # fmt: skip


def check(args: argparse.Namespace, *, device: bool = True) -> None:
    """Refuse bad values of the shared options present in ``args`` (UserError, one line), before any model
    is loaded. ``device``: also check that ``--device`` exists here and ``--precision`` runs on it."""
    segment = getattr(args, "segment", None)
    segments = segment if isinstance(segment, list) else [] if segment is None else [segment]
    for s in segments:
        if not (math.isfinite(s) and s > 0):
            raise UserError(f"--segment must be a positive number of seconds, got {s:g}")
    overlap = getattr(args, "overlap", None)
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise UserError(f"--overlap must be in [0, 1), got {overlap:g}")
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if hasattr(args, "format"):
        if getattr(args, "bit_depth", "") is None:  # not given: the default (mp3 ignores it)
            args.bit_depth = DEFAULT_BIT_DEPTH
        elif args.format == "mp3" and hasattr(args, "bitrate"):
            raise UserError(
                f"--bit-depth is for wav and flac; mp3 takes --bitrate KBPS (default {DEFAULT_MP3_BITRATE})"
            )
        check_format(args.format, args.bit_depth, getattr(args, "bitrate", None))
    if device and hasattr(args, "device"):
        # torch loads here, not at import: --help and argparse's errors do without it
        from bsmamba2.device import resolve_device, resolve_precision

        dev = resolve_device(args.device)
        if hasattr(args, "precision"):
            resolve_precision(dev, args.precision)


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Separator.from_pretrained`` keywords that the shared device and chunking options give, less the
    chunk length and overlap (commands set those their own way): device, precision, backend, batch size."""
    return {
        "device": args.device,
        "precision": args.precision,
        "backend": args.backend,
        "batch_size": args.batch_size,
    }
