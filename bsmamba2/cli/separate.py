"""``bsmamba2 separate INPUT... [-o OUT]``: separate songs into vocals + instrumental (or all stems).

Inputs are files or folders (searched recursively). Outputs go to ``OUT/<track>/<stem>.<ext>``; without
``-o``, to a ``separated/`` folder next to each input; MUSDB18HQ track folders are named by the folder
(:mod:`~bsmamba2.cli.inputs`). Options are checked and output names resolved before the model loads. A
failing file is reported in one line and the batch goes on; the exit code is 1 if any file failed. Under
``torchrun`` each rank takes every WORLD_SIZE-th file and its own GPU (cuda:LOCAL_RANK); no process group
is needed.

Speed (issue 12): each file is decoded ahead and encoded behind the model on threads
(:mod:`bsmamba2.batchrun`); on CUDA the batch size and the compiled glue default to
``CUDA_BATCH_SIZE`` / ``CUDA_FUSED``, chosen from ``benchmarks/bench_cli.py`` on an H200.
``--timings FILE`` writes the seconds spent per stage (load, decode, model, encode) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bsmamba2.api import ENGINES, Separator
from bsmamba2.apply import DEFAULT_OVERLAP
from bsmamba2.atomic import atomic_write
from bsmamba2.batchrun import StageTimes, stage_clock
from bsmamba2.cli import options
from bsmamba2.cli.inputs import DEFAULT_OUT, Job, find_inputs
from bsmamba2.device import dist_env, resolve_device
from bsmamba2.errors import UserError
from bsmamba2.progress import ChunkBar

log = logging.getLogger(__name__)

# Defaults on a CUDA device (elsewhere: options.DEFAULT_BATCH_SIZE, eager glue). Each is a one-line switch,
# set from benchmarks/bench_cli.py on an H200 (BENCHMARKS.md, issue 12).
CUDA_BATCH_SIZE = 4
CUDA_FUSED = False
# Where the compiled glue's kernels are kept between runs (unless TORCHINDUCTOR_CACHE_DIR says otherwise):
# torch's own default lives in /tmp, which a reboot empties.
INDUCTOR_CACHE = Path.home() / ".cache" / "bsmamba2" / "inductor"


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
        help="write the seconds spent per stage (load, decode, model, encode) to FILE as JSON",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    options.check(args)
    jobs, failures = find_inputs(args.inputs, args.out)
    env = dist_env()
    jobs = jobs[env.rank :: env.world_size]  # torchrun: file i goes to rank i % world
    if not jobs:
        return _summary(0, 0, failures, env.rank, env.world_size, bool(args.quiet))
    _device_defaults(args)
    with stage_clock() as times:
        t = time.perf_counter()
        code = _run_jobs(args, jobs, failures, env.rank, env.world_size, times)
        times.add("run", time.perf_counter() - t)
    if args.timings is not None:
        with atomic_write(args.timings, durable=False) as tmp:
            Path(tmp).write_text(json.dumps(times.as_dict(), indent=1))
    return code


def _device_defaults(args: argparse.Namespace) -> None:
    """Fill in the batch size and --fused left at their defaults, which depend on the device."""
    cuda = resolve_device(args.device).type == "cuda"
    if args.batch_size is None:
        args.batch_size = CUDA_BATCH_SIZE if cuda else options.DEFAULT_BATCH_SIZE
    if args.fused is None:
        args.fused = cuda and CUDA_FUSED and args.engine != "onnx"
    if args.fused:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE))


def _run_jobs(
    args: argparse.Namespace,
    jobs: list[Job],
    failures: list[tuple[str, str]],
    rank: int,
    world: int,
    times: StageTimes,
) -> int:
    """Load the model once, then separate every job (skipping done ones); returns the exit code."""
    quiet = bool(args.quiet)
    # per-file chunk progress, through the same hook a web front end would use
    chunk_bar = None if quiet else ChunkBar()
    t = time.perf_counter()
    sep = Separator.from_pretrained(
        args.model,
        segment=args.segment,
        overlap=args.overlap,
        callback=chunk_bar,
        fused=args.fused,
        engine=args.engine,
        **options.model_settings(args),
    )
    times.add("load", time.perf_counter() - t)
    times.info.update(
        device=str(sep.device),
        batch_size=sep.batch_size,
        fused=bool(args.fused),
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
    if sep.device.type == "cuda":
        times.info["gpu peak (GiB)"] = round(torch.cuda.max_memory_allocated(sep.device) / 2**30, 3)
    log.debug("stage seconds: %s", times.as_dict())
    return _summary(done, skipped, failures, rank, world, quiet)


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
            bitrate=args.bitrate,
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
