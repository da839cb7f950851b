"""``bsmamba2 separate INPUT... [-o OUT]``: separate songs into vocals + instrumental (or all stems).

Inputs are files or folders (searched recursively). Outputs go to ``OUT/<track>/<stem>.<ext>``; without
``-o``, to a ``separated/`` folder next to each input; MUSDB18HQ track folders are named by the folder
(:mod:`~bsmamba2.cli.inputs`). Options are checked and output names resolved before the model loads. A
failing file is reported in one line and the batch goes on; the exit code is 1 if any file failed. Under
``torchrun`` each rank takes every WORLD_SIZE-th file and its own GPU (cuda:LOCAL_RANK); no process group
is needed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from bsmamba2.api import ENGINES, Separator
from bsmamba2.apply import DEFAULT_OVERLAP
from bsmamba2.cli import options
from bsmamba2.cli.inputs import DEFAULT_OUT, Job, find_inputs
from bsmamba2.device import dist_env
from bsmamba2.errors import UserError
from bsmamba2.progress import ChunkBar

log = logging.getLogger(__name__)


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
        "--fused", action="store_true",
        help="compile the glue around each Mamba2 scan (torch.compile): faster for long runs, ~12 s start-up",
    )  # fmt: skip
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


def run(args: argparse.Namespace) -> int:
    options.check(args)
    jobs, failures = find_inputs(args.inputs, args.out)
    env = dist_env()
    jobs = jobs[env.rank :: env.world_size]  # torchrun: file i goes to rank i % world
    quiet = bool(args.quiet)
    if not jobs:
        return _summary(0, 0, failures, env.rank, env.world_size, quiet)
    # per-file chunk progress, through the same hook a web front end would use
    chunk_bar = None if quiet else ChunkBar()
    sep = Separator.from_pretrained(
        args.model,
        segment=args.segment,
        overlap=args.overlap,
        callback=chunk_bar,
        fused=args.fused,
        engine=args.engine,
        **options.model_settings(args),
    )
    names = sep.check_stems(args.stems)
    done = skipped = 0
    bar = tqdm(jobs, unit="file", disable=quiet or len(jobs) < 2)
    for job in bar:
        bar.set_postfix_str(job.source.name)
        try:
            result = _separate_one(sep, job, args, names)
        finally:
            if chunk_bar is not None:
                chunk_bar.close()
        if result is SKIPPED:
            skipped += 1
        elif result is not None:
            failures.append((str(job.source), result))
        else:
            done += 1
            log.info("%s -> %s", job.source, job.out_dir)
    return _summary(done, skipped, failures, env.rank, env.world_size, quiet)


SKIPPED = "skipped"  # _separate_one's answer when every output is up to date


def _separate_one(sep: Separator, job: Job, args: argparse.Namespace, names: tuple[str, ...]) -> str | None:
    """Separate one file; None when done, SKIPPED when its outputs are up to date, else the one-line reason
    it failed (the batch goes on). The keep-or-redo decision is the API's (``Separator.plan_file``)."""
    try:
        plan = sep.plan_file(
            job.source,
            job.out_dir.parent,
            track=job.out_dir.name,
            format=args.format,
            bit_depth=args.bit_depth,
            downmix=args.downmix,
            overwrite=args.overwrite,
            stems=names,
        )
        if plan.up_to_date:
            return SKIPPED
        sep.run_plan(plan)
    except UserError as e:
        return str(e)
    except (RuntimeError, ValueError, OSError, MemoryError) as e:  # keep the batch going, say what broke
        log.debug("traceback for %s", job.source, exc_info=True)
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
    return None


def _summary(
    done: int, skipped: int, failures: list[tuple[str, str]], rank: int, world: int, quiet: bool = False
) -> int:
    who = f"[rank {rank}/{world}] " if world > 1 else ""
    for src, msg in failures:
        # the message usually starts with the path already (AudioError); don't repeat it
        line = msg if msg.startswith(src) else f"{src}: {msg}"
        print(f"bsmamba2 separate: error: {line}", file=sys.stderr)
    if not quiet:
        print(f"{who}separated {done}, skipped {skipped}, failed {len(failures)}", file=sys.stderr)
    return 1 if failures else 0
