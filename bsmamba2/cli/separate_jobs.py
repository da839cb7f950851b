"""The work of ``bsmamba2 separate`` (:mod:`~bsmamba2.cli.separate` holds its arguments): load the model
once, then separate every input file, skipping those whose outputs are up to date.

Fixed costs (issue 12): on a CUDA device the first-call costs (context, cuBLAS, cuFFT, Triton kernels,
allocator growth) are paid on a thread (:mod:`~bsmamba2.cli.warmup`) while this one searches the inputs,
reads the checkpoint and builds the model, and the first file waits for it; and with two or more files,
the next one takes the GPU while the last one's outputs are still written (``FILES_IN_FLIGHT``,
:mod:`~bsmamba2.cli.inflight`). Elsewhere neither happens: files go one at a time on this thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bsmamba2.api import DEFAULT_MODEL, Separator
from bsmamba2.atomic import atomic_write
from bsmamba2.batchrun import StageTimes, stage_clock
from bsmamba2.cli import options, startup
from bsmamba2.cli.inflight import ModelGates, run_in_flight
from bsmamba2.cli.inputs import Job, find_inputs
from bsmamba2.cli.warmup import WarmUp, WarmUpPlan, start_warm_up
from bsmamba2.device import dist_env, resolve_device
from bsmamba2.errors import UserError
from bsmamba2.progress import ChunkBar

log = logging.getLogger(__name__)

# Files under way at once, per device type (cli/inflight.py): with 2 on CUDA the next file takes the GPU while
# the last one's outputs are written; elsewhere that tail would share the cores with the model. On an H200
# (benchmarks/bench_cli.py, 2026-12-01) ten 4-minute songs took 9.58 s with 2 against 12.19 s one at a time.
FILES_IN_FLIGHT: dict[str, int] = {"cuda": 2}
# For benchmarks (before / after in one run): a number of files in flight (the warm-up's switch,
# BSMAMBA2_CUDA_WARM_UP, is cli/warmup.py's).
FILES_IN_FLIGHT_ENV = "BSMAMBA2_FILES_IN_FLIGHT"
# Where the compiled glue's kernels are kept between runs (unless TORCHINDUCTOR_CACHE_DIR says otherwise):
# torch's own default lives in /tmp, which a reboot empties.
INDUCTOR_CACHE = Path.home() / ".cache" / "bsmamba2" / "inductor"


def run_jobs(args: argparse.Namespace) -> int:
    """Run ``bsmamba2 separate`` on parsed arguments; returns the exit code (1 if any file failed)."""
    options.check(args)
    t = time.perf_counter()
    device = _device_defaults(args)
    warming = _start_warm_up(args, device)  # beside the file search and the load
    try:
        jobs, failures = find_inputs(args.inputs, args.out)
        env = dist_env()
        jobs = jobs[env.rank :: env.world_size]  # torchrun: file i goes to rank i % world
        if not jobs:
            return _summary(0, 0, failures, env.rank, env.world_size, bool(args.quiet))
        with stage_clock() as times:
            code = _run_jobs(args, jobs, failures, env.rank, env.world_size, times, warming)
            times.add("run", time.perf_counter() - t)
    finally:
        if warming is not None:
            warming.wait()  # long done once a model was loaded; else still no stray thread
    if args.timings is not None:
        with atomic_write(args.timings, durable=False) as tmp:
            Path(tmp).write_text(json.dumps(times.as_dict(), indent=1))
    return code


def _device_defaults(args: argparse.Namespace) -> torch.device:
    """Fill in the batch size and --fused left at their defaults, which depend on the device; returns it."""
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.batch_size is None:
        args.batch_size = options.CUDA_BATCH_SIZE if cuda else options.DEFAULT_BATCH_SIZE
    if args.fused is None:
        args.fused = cuda and options.CUDA_FUSED and args.engine != "onnx"
    if args.fused:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE))
    return device


def _start_warm_up(args: argparse.Namespace, device: torch.device) -> WarmUp | None:
    """The CUDA warm-up (:mod:`~bsmamba2.cli.warmup`) for what the first file will run, on its thread;
    None off CUDA, for the ONNX engine and with ``BSMAMBA2_CUDA_WARM_UP=0``."""
    if args.engine == "onnx":
        return None
    plan = WarmUpPlan(
        device,
        precision=args.precision,
        model=Path(args.model) if args.model is not None else DEFAULT_MODEL,
        backend=args.backend,
        segment=args.segment,
        overlap=args.overlap,
        batch_size=args.batch_size,
        forward=not args.fused,  # torch.compile on two threads at once is not safe
    )
    return start_warm_up(plan)


def _wait_for_warm_up(warming: WarmUp | None, times: StageTimes) -> None:
    """Let the warm-up end before the first forward, so that only one model runs on the device at a time
    (and its peak memory is not added to the file's); the wait and the thread's phases go to the clock."""
    if warming is None:
        return
    times.add("warm-up wait", warming.wait())
    times.info.update({f"warm-up {k} (s)": round(v, 4) for k, v in warming.seconds.items()})
    if warming.error is not None:
        times.info["warm-up error"] = warming.error


def _run_jobs(
    args: argparse.Namespace,
    jobs: list[Job],
    failures: list[tuple[str, str]],
    rank: int,
    world: int,
    times: StageTimes,
    warming: WarmUp | None = None,
) -> int:
    """Load the model once, then separate every job (skipping done ones); returns the exit code."""
    quiet = bool(args.quiet)
    # per-file chunk progress, through the same hook a web front end would use
    chunk_bar = None if quiet else ChunkBar()
    gates = ModelGates(chunk_bar)
    t = time.perf_counter()
    sep = Separator.from_pretrained(
        args.model,
        segment=args.segment,
        overlap=args.overlap,
        callback=gates,
        fused=args.fused,
        engine=args.engine,
        **options.model_settings(args),
    )
    times.add("load", time.perf_counter() - t)
    startup.resume_gc()  # paused since process start (cli.separate's LATE_GC): the start-up is over
    _wait_for_warm_up(warming, times)
    in_flight = min(_files_in_flight(sep.device), len(jobs))  # one file: on this thread, as before
    times.info.update(
        device=str(sep.device),
        batch_size=sep.batch_size,
        fused=bool(args.fused),
        files_in_flight=in_flight,
    )
    names = sep.check_stems(args.stems)

    def work(job: Job) -> str | None:
        try:
            return _separate_one(sep, job, args, names)
        finally:
            if chunk_bar is not None and in_flight == 1:  # with files in flight the bar resets itself
                chunk_bar.close()

    counts = {"done": 0, "skipped": 0}
    bar = tqdm(total=len(jobs), unit="file", disable=quiet or len(jobs) < 2)
    results = run_in_flight(jobs, work, gates, key=lambda j: j.source, in_flight=in_flight)
    with contextlib.closing(results):  # a signal while a result is handled here stops the workers at once
        for job, result in results:
            _count(job, result, failures, counts)
            bar.set_postfix_str(job.source.name)
            bar.update()
    bar.close()
    if chunk_bar is not None:
        chunk_bar.close()  # a last file that failed midway leaves its bar open
    if sep.device.type == "cuda":
        times.info["gpu peak (GiB)"] = round(torch.cuda.max_memory_allocated(sep.device) / 2**30, 3)
    log.debug("stage seconds: %s", times.as_dict())
    return _summary(counts["done"], counts["skipped"], failures, rank, world, quiet)


def _count(job: Job, result: str | None, failures: list[tuple[str, str]], counts: dict[str, int]) -> None:
    """Tally one file's outcome (``_separate_one``'s answer) into ``counts`` / ``failures``."""
    if result is SKIPPED:
        counts["skipped"] += 1
    elif result is not None:
        failures.append((str(job.source), result))
    else:
        counts["done"] += 1
        log.info("%s -> %s", job.source, job.out_dir)


def _files_in_flight(device: torch.device) -> int:
    """FILES_IN_FLIGHT for the device's type (1 if absent), unless the environment sets a number."""
    given = os.environ.get(FILES_IN_FLIGHT_ENV)
    if not given:
        return FILES_IN_FLIGHT.get(device.type, 1)
    if not given.isdigit() or int(given) < 1:
        raise UserError(f"{FILES_IN_FLIGHT_ENV} must be a whole number of at least 1, got {given!r}")
    return int(given)


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
