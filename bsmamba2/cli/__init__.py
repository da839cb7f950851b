"""The ``bsmamba2`` command: ``bsmamba2 [-v | -q] COMMAND [ARGS...]``, thin subcommands over the Python API.

Each subcommand is a module of this package exposing ``add_arguments(parser)`` and ``run(args) -> int``;
the options several commands share are defined once, in :mod:`~bsmamba2.cli.options`. A module may also
expose ``before_torch(args)``: torch-free work started once the arguments parse, before torch is imported. A module is imported
only when its subcommand runs, so ``bsmamba2 --help`` stays fast. Global flags, before or after COMMAND:
``-v/--verbose`` (debug logging), ``-q/--quiet`` (warnings and errors only, no progress bars); and
``--version``. ``run`` sees them as ``args.verbose`` / ``args.quiet``.

The executable's process (:func:`entry`) starts with the garbage collector paused and may end without the
interpreter's teardown (:mod:`~bsmamba2.cli.startup`): a module sets ``LATE_GC = True`` to resume the
collector itself once its start-up is done (else it resumes before ``run``), and ``FAST_EXIT = True`` when
everything it does is on disk by the time ``run`` returns. :func:`main` itself does neither of the two.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from bsmamba2 import __version__
from bsmamba2.cli import startup
from bsmamba2.cli.console import Terminated, console_logging, os_error_line, signals_interrupt
from bsmamba2.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("bsmamba2.cli.separate", "separate songs into vocals / instrumental (or all stems)"),
    "train": ("bsmamba2.cli.train", "train a model from a YAML config"),
    "evaluate": ("bsmamba2.cli.evaluate", "compute uSDR / cSDR on a MUSDB18HQ-layout folder"),
    "synth": ("bsmamba2.cli.synth", "write a synthetic multitrack corpus in MUSDB18HQ layout"),
    "convert": ("bsmamba2.cli.convert", "convert an official BSMamba2 / MSST checkpoint to safetensors"),
    "demo": ("bsmamba2.cli.demo", "separate the bundled example song with the bundled model"),
    "stream": (
        "bsmamba2.cli.stream",
        "separate block by block with bounded latency (a causal model; file or stdin)",
    ),
    "export": ("bsmamba2.cli.export", "export a model to ONNX (pip install 'bsmamba2[onnx]')"),
    "serve": (
        "bsmamba2.cli.serve",
        "a web page to separate songs in the browser (pip install 'bsmamba2[web]')",
    ),
}
# global flag -> the Namespace attribute it sets
GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """-v / -q, unless the subcommand's own arguments already took the name (synth's -q: same meaning)."""
    taken = {s for action in parser._actions for s in action.option_strings}
    if not {"-v", "--verbose"} & taken:
        parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if not {"-q", "--quiet"} & taken:
        parser.add_argument(
            "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
        )


def get_parser() -> argparse.ArgumentParser:
    """The top-level parser (for ``--help``); each subcommand's own arguments come from its module."""
    parser = argparse.ArgumentParser(prog="bsmamba2", description="BSMamba2 music source separation.")
    parser.add_argument("--version", action="version", version=f"bsmamba2 {__version__}")
    _add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(command: str, module: ModuleType) -> argparse.ArgumentParser:
    """The parser of one subcommand: its module's arguments plus the global -v / -q."""
    parser = argparse.ArgumentParser(prog=f"bsmamba2 {command}", description=SUBCOMMANDS[command][1])
    module.add_arguments(parser)
    _add_global_flags(parser)
    return parser


def _usage_error(message: str) -> int:
    get_parser().print_usage(sys.stderr)
    print(f"bsmamba2: error: {message}", file=sys.stderr)
    return 2


def entry() -> None:
    """The ``bsmamba2`` executable (and ``python -m bsmamba2``): :func:`main` in a process of its own, with
    the garbage collector paused over the start-up and, for a command that allows it, no interpreter
    teardown after it (:mod:`~bsmamba2.cli.startup`). Never returns."""
    startup.pause_gc()
    code, module = _main(None)
    startup.finish(code, startup.fast_exit(module))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bsmamba2 [-v | -q] COMMAND [ARGS...]``; returns the exit code (0 ok, 1 user error, 2 usage)."""
    return _main(argv)[0]


def _main(argv: Sequence[str] | None) -> tuple[int, ModuleType | None]:
    """:func:`main`, also returning the command's module once it was imported (for :func:`entry`)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    finally:
        startup.resume_gc()  # a command that failed before resuming it (see LATE_GC) leaves it running


def _dispatch(args_in: list[str]) -> tuple[int, ModuleType | None]:
    flags: set[str] = set()
    while args_in and args_in[0] in GLOBAL_FLAGS:
        flags.add(GLOBAL_FLAGS[args_in.pop(0)])
    if flags == {"verbose", "quiet"}:
        return _usage_error("-q/--quiet and -v/--verbose exclude each other"), None
    if args_in and args_in[0] == "--version":
        print(f"bsmamba2 {__version__}")
        return 0, None
    if not args_in or args_in[0] in ("-h", "--help"):
        get_parser().print_help()
        return (0 if args_in else 2), None
    command = args_in[0]
    if command not in SUBCOMMANDS:
        return _usage_error(f"unknown command {command!r} (choose from {', '.join(SUBCOMMANDS)})"), None
    module = importlib.import_module(SUBCOMMANDS[command][0])
    try:
        args = command_parser(command, module).parse_args(args_in[1:])
    except SystemExit as e:  # argparse already printed its help, or its one-line usage error
        return int(e.code or 0), module
    before_torch = getattr(module, "before_torch", None)  # torch-free work to start beside its import
    if before_torch is not None:
        before_torch(args)
    # After parsing, so that --help and usage errors need no torch (bsmamba2.device imports it); before
    # the command allocates anything large.
    from bsmamba2.device import tune_cpu_allocator

    tune_cpu_allocator()  # large CPU tensors: reuse freed memory instead of page-faulting it back each pass
    args.verbose = "verbose" in flags or bool(args.verbose)
    args.quiet = "quiet" in flags or bool(args.quiet)
    if args.verbose and args.quiet:
        return _usage_error("-q/--quiet and -v/--verbose exclude each other"), module
    if not getattr(module, "LATE_GC", False):  # else the command resumes the collector itself
        startup.resume_gc()
    return _run(command, module, args), module


def _run(command: str, module: ModuleType, args: argparse.Namespace) -> int:
    """The command's ``run(args)``, its expected failures reported in one line; returns the exit code."""
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    with console_logging(level), signals_interrupt():
        try:
            return int(module.run(args) or 0)
        except UserError as e:
            print(f"bsmamba2 {command}: error: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # a read-only folder, a full disk: the reason in one line (-v: the traceback)
            logging.getLogger(__name__).debug("traceback", exc_info=True)
            print(f"bsmamba2 {command}: error: {os_error_line(e)}", file=sys.stderr)
            return 1
        except Terminated as e:
            print(f"bsmamba2 {command}: stopped by {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print(f"bsmamba2 {command}: interrupted", file=sys.stderr)
            return 130
