"""``bsmamba2 separate INPUT... [-o OUT]``: separate songs into vocals + instrumental (or all stems).

Inputs are files or folders (searched recursively). Outputs go to ``OUT/<track>/<stem>.<ext>``; without
``-o``, to a ``separated/`` folder next to each input; MUSDB18HQ track folders are named by the folder
(:mod:`~bsmamba2.cli.inputs`). Options are checked and output names resolved before the model loads. A
failing file is reported in one line and the batch goes on; the exit code is 1 if any file failed. Under
``torchrun`` each rank takes every WORLD_SIZE-th file and its own GPU (cuda:LOCAL_RANK); no process group
is needed.

Speed (issue 12): each file is decoded ahead and encoded behind the model on threads
(:mod:`bsmamba2.batchrun`); on CUDA the batch size and the compiled glue default to
``CUDA_BATCH_SIZE`` / ``CUDA_FUSED``, chosen from ``benchmarks/bench_cli.py`` on an H200, the first-call
costs (CUDA context, cuBLAS, cuFFT, Triton kernels, allocator) are paid on a thread beside the model load
(:mod:`~bsmamba2.cli.warmup`) and the next file starts while the last one is written
(:mod:`~bsmamba2.cli.separate_jobs`).
``--timings FILE`` writes the seconds spent per stage (load, decode, model, to host, encode, write) as JSON.

This module holds the command's arguments and imports no torch, so ``bsmamba2 separate --help`` answers
without loading it; the work is :mod:`~bsmamba2.cli.separate_jobs`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bsmamba2.cli import cuda_prestart, options
from bsmamba2.cli.inputs import DEFAULT_OUT
from bsmamba2.cli.options import CUDA_BATCH_SIZE, CUDA_FUSED, DEFAULT_OVERLAP, ENGINES

# Process start and end (bsmamba2.cli.startup): the garbage collector stays paused through the model load
# (separate_jobs resumes it), and every output is renamed into place before run() returns.
LATE_GC = True
FAST_EXIT = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)"
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=None,
        help=f"output folder (default: a '{DEFAULT_OUT}/' folder next to each input); tracks go to OUT/<track>/",
    )  # fmt: skip
    options.add_model(parser)
    options.add_chunking(
        parser,
        overlap=DEFAULT_OVERLAP,
        overlap_help=f"fraction of a chunk shared with the next (default {DEFAULT_OVERLAP})",
    )
    options.add_device(parser)
    parser.add_argument(
        "--engine", default="auto", choices=ENGINES,
        help="torch, or onnx: an exported .onnx model run by ONNX Runtime (default auto: onnx for a .onnx --model)",
    )  # fmt: skip
    parser.add_argument(
        "--fused", action=argparse.BooleanOptionalAction, default=None,
        help="compile the glue around each Mamba2 scan (torch.compile; the first run compiles, later runs reuse "
        f"the cache); default: {'on' if CUDA_FUSED else 'off'} on CUDA, off elsewhere",
    )  # fmt: skip
    parser.set_defaults(batch_size=None)  # resolved per device in run(): see CUDA_BATCH_SIZE
    for action in parser._actions:
        if action.dest == "batch_size":
            action.help = (
                f"chunks per forward pass (default {options.DEFAULT_BATCH_SIZE}, {CUDA_BATCH_SIZE} on CUDA)"
            )
    options.add_output(parser)
    parser.add_argument(
        "--downmix", action="store_true",
        help="mix inputs with more than 2 channels down to stereo (5.1: ITU-R BS.775, LFE dropped); outputs are stereo",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them)"
    )
    parser.add_argument(
        "--stems", nargs="+", default=None, help="write only these outputs, e.g. --stems vocals"
    )
    parser.add_argument(
        "--timings", type=Path, default=None, metavar="FILE",
        help="write the seconds spent per stage (load, decode, model, to host, encode, write) to FILE as JSON",
    )  # fmt: skip


def before_torch(args: argparse.Namespace) -> None:
    """Called by :func:`bsmamba2.cli.main` once the arguments parse, before torch is imported: start the CUDA
    driver beside that import (:mod:`~bsmamba2.cli.cuda_prestart`), unless ``--engine onnx`` (as the
    warm-up that follows it in :mod:`~bsmamba2.cli.separate_jobs`)."""
    if args.engine != "onnx":
        cuda_prestart.start(args.device)


def run(args: argparse.Namespace) -> int:
    # torch and the model stack load only once the command runs (the module above stays light for --help)
    from bsmamba2.cli.separate_jobs import run_jobs

    return run_jobs(args)
