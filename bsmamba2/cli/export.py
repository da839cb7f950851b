"""``bsmamba2 export [MODEL] -o model.onnx``: the network between STFT and iSTFT as one ONNX file.

MODEL is any model file ``bsmamba2 separate`` loads (default: the bundled model). The file carries its config,
stems, sample rate and STFT settings; ``bsmamba2 separate --engine onnx --model model.onnx`` runs it with ONNX
Runtime. After writing, the file is run once against the torch model (``--no-check`` skips that).
``--int8`` writes the checked graph with its weight MatMuls quantised to int8 (opt-in: see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.checkpoints import load_model
from bsmamba2.device import BACKENDS
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.onnx.exporter import DEFAULT_OPSET, MIN_OPSET, export_onnx
from bsmamba2.onnx.quantize import quantize_int8

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="model file (default: the bundled model)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--backend", default="torch", choices=BACKENDS,
        help="Mamba2 scan: the export always runs the plain-PyTorch chunked SSD (triton switches to it)",
    )  # fmt: skip
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} or later (default {DEFAULT_OPSET})",
    )
    parser.add_argument("--ema", action="store_true", help="an official checkpoint's EMA weights")
    parser.add_argument(
        "--no-check", dest="check", action="store_false",
        help="skip running the written file against the torch model",
    )  # fmt: skip
    parser.add_argument(
        "--int8", action="store_true",
        help="write int8 weight matrix products (ONNX Runtime dynamic quantisation; see BENCHMARKS.md)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out must name a .onnx file, got {out}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists (--overwrite to replace it)")
    if args.opset < MIN_OPSET:
        raise UserError(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if args.backend == "triton":
        log.info("--backend triton: the Triton kernels cannot be exported; exporting the plain-PyTorch SSD")
    path = Path(args.model) if args.model is not None else DEFAULT_MODEL
    if args.model is None and not path.exists():
        raise CheckpointError(
            f"no bundled model at {path} (this build ships without weights); pass a model file"
        )
    model = load_model(path, device="cpu", backend="chunked", ema=args.ema)
    if not args.int8:
        export_onnx(model, out, opset=args.opset, source=path.name, check=args.check)
    else:  # the fp32 graph is checked against torch, then quantised; int8 is not held to 1e-4
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            fp32 = export_onnx(
                model, Path(tmp) / out.name, opset=args.opset, source=path.name, check=args.check
            )
            quantize_int8(fp32, out)
    log.info("%s -> %s (%.1f MB)", path, out, out.stat().st_size / 1e6)
    return 0
