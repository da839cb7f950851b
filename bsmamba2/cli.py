"""The ``bsmamba2`` command: thin subcommands over the Python API.

Each subcommand lives in its own module and exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``bsmamba2 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bsmamba2.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("bsmamba2.separate_cli", "separate songs into vocals / instrumental (or all stems)"),
    "train": ("bsmamba2.train.cli", "train a model from a YAML config"),
    "evaluate": ("bsmamba2.evaluate.cli", "compute uSDR / cSDR on a MUSDB18HQ-layout folder"),
    "synth": ("bsmamba2.data.synth.cli", "write a synthetic multitrack corpus in MUSDB18HQ layout"),
    "convert": (
        "bsmamba2.checkpoints.convert_cli",
        "convert an official BSMamba2 / MSST checkpoint to safetensors",
    ),
    "demo": ("bsmamba2.demo", "separate the bundled example song with the bundled model"),
    "stream": ("bsmamba2.streaming.cli", "separate a file or stdin PCM block by block, in real time"),
}


def get_parser() -> argparse.ArgumentParser:
    """The top-level parser (for ``--help``); each subcommand's own arguments come from its module."""
    parser = argparse.ArgumentParser(prog="bsmamba2", description="BSMamba2 music source separation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bsmamba2 [-v] COMMAND [ARGS...]``; returns the exit code (0 ok, 1 user error, 2 usage)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args_in and args_in[0] in ("-v", "--verbose"):
        verbose = True
        args_in.pop(0)
    if not args_in or args_in[0] in ("-h", "--help"):
        get_parser().print_help()
        return 0 if args_in else 2
    command = args_in[0]
    if command not in SUBCOMMANDS:
        get_parser().print_usage(sys.stderr)
        print(
            f"bsmamba2: error: unknown command {command!r} (choose from {', '.join(SUBCOMMANDS)})",
            file=sys.stderr,
        )
        return 2
    module_name, help_text = SUBCOMMANDS[command]
    from bsmamba2.device import tune_cpu_allocator

    tune_cpu_allocator()  # large CPU tensors: reuse freed memory instead of page-faulting it back each pass
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"bsmamba2 {command}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    try:
        args = parser.parse_args(args_in[1:])
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if (verbose or args.verbose) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"bsmamba2 {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bsmamba2 {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
