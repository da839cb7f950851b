"""``bsmamba2 demo``: separate a generated example song with the bundled model, offline, and score it.

    bsmamba2 demo -o demo_out                       # what `make demo` runs
    bsmamba2 demo -o demo_out --model my.safetensors --seconds 10

Writes the example, the estimates, a spectrogram PNG and ``metrics.json`` (:func:`bsmamba2.demo.run_demo`),
and prints the uSDR of the estimated vocals next to the do-nothing baseline (the mixture as the estimate).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bsmamba2.api import Separator
from bsmamba2.cli import options
from bsmamba2.data.synth.composer import PRESET_NAMES
from bsmamba2.demo import DEFAULT_PRESET, DEFAULT_SECONDS, DEFAULT_SEED, report_lines, run_demo
from bsmamba2.errors import UserError

FAST_EXIT = True  # everything is written before run() returns (bsmamba2.cli.startup)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)"
    )
    options.add_model(parser)
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help=f"example length (default {DEFAULT_SECONDS:g})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"example seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--preset", default=DEFAULT_PRESET, choices=("v2", *PRESET_NAMES),
        help=f"the example: v2 = the shipped 20 s corpus-v2 song; or a vocal sparsity for the built-in "
        f"synthesizer (default {DEFAULT_PRESET})",
    )  # fmt: skip
    options.add_device(parser, backend=False)
    parser.add_argument("--no-plot", action="store_true", help="skip the spectrogram PNG")


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise UserError(f"--seconds must be a positive number, got {args.seconds:g}")
    options.check(args)
    # Load the model first: a missing bundled model should fail before any work.
    sep = Separator.from_pretrained(args.model, device=args.device, precision=args.precision)
    result = run_demo(
        sep,
        args.out,
        seconds=args.seconds,
        preset=args.preset,
        seed=args.seed,
        plot=not args.no_plot,
        model_name=str(args.model or "bundled default"),
    )
    print("\n".join(report_lines(result)))
    return 0
