"""Throughput of the random-mix training sampler: 8-second examples per second from a corpus on disk.

Usage::

    python benchmarks/bench_sampler.py                      # generates a synthetic corpus first (cached)
    python benchmarks/bench_sampler.py --root /data/musdb18hq --workers 2 --examples 600

It times the training loop's DataLoader (``BatchLoader``: default 2 workers, batch 5 like the official
per-GPU batch) over ``MixDataset`` with the official defaults (SAD on, gain, silent stems) after a warm-up,
and prints one result line with the date and machine. ``--loader per-item`` times a plain DataLoader instead
(one ``dataset[i]`` per example, stacked by the default collate) for comparison. When it generates the corpus
it also reports the synthesizer's CPU seconds per minute of audio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch

from bsmamba2.data.loader import BatchLoader
from bsmamba2.data.sampler import MixDataset, SamplerConfig
from bsmamba2.device import tune_cpu_allocator


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def synth_corpus(root: Path, n_train: int, seconds: float) -> None:
    from bsmamba2.data.synth import synthesize_track, track_seed, write_track

    # generated here (not via synthesize_corpus) to time the synthesizer itself, one process
    cpu = 0.0
    for i in range(n_train):
        t0 = time.process_time()
        stems, meta = synthesize_track(seconds, "mixed", track_seed(0, "train", i))
        cpu += time.process_time() - t0
        write_track(root / "train" / f"synth-train-{i:04d}", stems, meta)
    print(f"synth: {cpu / (n_train * seconds / 60):.2f} s of CPU per minute of 4-stem audio "
          f"({n_train} tracks x {seconds:.0f} s)")  # fmt: skip


def children(pid: int) -> list[int]:
    """Ids of the live child processes of ``pid`` (the DataLoader workers), from Linux /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return kids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc), 0 where unavailable."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root", type=Path, default=None, help="corpus in MUSDB18HQ layout (default: generate one)"
    )
    ap.add_argument("--corpus-dir", type=Path, default=Path("/tmp/bsmamba2-bench-corpus"))
    ap.add_argument("--tracks", type=int, default=8, help="generated training tracks")
    ap.add_argument("--seconds", type=float, default=60.0, help="generated track length")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--examples", type=int, default=600, help="examples timed (after a warm-up)")
    ap.add_argument(
        "--loader",
        choices=("batch", "per-item"),
        default="batch",
        help="batch: the training loop's BatchLoader; per-item: a plain DataLoader with the default collate",
    )
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    tune_cpu_allocator()  # as every `bsmamba2` command does at start (cli.main), `train` included

    root = args.root
    if root is None:
        root = args.corpus_dir
        if not (root / "train").is_dir():
            synth_corpus(root, args.tracks, args.seconds)
    cfg = SamplerConfig(items_per_epoch=args.examples + 20 * args.batch)
    t0 = time.perf_counter()
    ds = MixDataset(root, "train", cfg, seed=0)
    setup = time.perf_counter() - t0
    persistent = args.workers > 0
    loader: BatchLoader | torch.utils.data.DataLoader[tuple[torch.Tensor, torch.Tensor]]
    if args.loader == "batch":
        sampler = torch.utils.data.RandomSampler(ds)
        loader = BatchLoader(ds, sampler, args.batch, num_workers=args.workers, persistent_workers=persistent)
    else:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch, num_workers=args.workers, shuffle=True, persistent_workers=persistent
        )
    it = iter(loader)
    for _ in range(4 * max(1, args.workers)):  # warm-up: worker start-up and page cache
        next(it)
    pids = [os.getpid(), *children(os.getpid())]
    n = 0
    c0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    for mix, _ in it:
        n += mix.shape[0]
        if n >= args.examples:
            break
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(pids) - c0
    load = os.getloadavg()[0]
    # CPU per example (all processes) is what the sampler costs; wall-clock throughput also depends on
    # what else runs on the machine, hence the load averages in the line (before: others; after: with us).
    print(
        f"{datetime.date.today()} | {machine()} | {len(ds.tracks)} tracks | {args.loader} loader, "
        f"{args.workers} workers, batch {args.batch} | setup {setup:.1f} s | {n / dt:.1f} examples/s of {cfg.segment_seconds:.0f} s (SAD on) | "
        f"{1000 * cpu / max(n, 1):.1f} ms CPU/example -> {args.workers * n / max(cpu, 1e-9):.0f} examples/s "
        f"on {args.workers} idle cores | load avg {load_before:.1f} before, {load:.1f} after"
    )


if __name__ == "__main__":
    main()
