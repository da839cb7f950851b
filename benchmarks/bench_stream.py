"""Real-time streaming of the causal model (issue 15): latency, real-time factor and push time per block size,
memory over a long stream. CPU or CUDA (batch 1).

    python benchmarks/bench_stream.py                            # the shipped causal model, 1 CPU thread
    python benchmarks/bench_stream.py --device cuda --out results/stream_h200
    python benchmarks/bench_stream.py --threads 2 --block-ms 10 --seconds 30 --long 600
    python benchmarks/bench_stream.py --config configs/causal_small.yaml   # a config, random weights

1. Algorithmic latency: n_fft − 1 + lookahead · hop samples (exact: the stream's output is the offline output
   delayed by it), in samples and ms.
2. Per block size (``--block-ms``, default 10, 100 and 1000 ms): ``--seconds`` of noise pushed through
   ``CausalStream`` (the engine at the model's rate) after one second of warm-up. Real-time factor =
   processing time ÷ audio time, from the wall clock (what a live stream sees) and from this process's CPU
   time (less sensitive to other processes on a shared machine; on CUDA it counts the host side only); and
   the time per push (median, p99, max) against the block's duration: a live stream needs every push, not
   only the mean, to finish within its block.
3. Memory flat in stream length: peak RSS (CPU) or peak allocated memory (CUDA) after a 60 s stream and after
   a ``--long`` one (0: skip), pushed in 1 s blocks (the state does not depend on the block size).

Prints a Markdown table and writes ``stream.md`` and ``stream.json`` to ``--out`` (default ``$OUT``, else
./bench_out). Needs nothing from the network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks.common import command_line, env_info  # noqa: E402
from bsmamba2.atomic import atomic_write  # noqa: E402
from bsmamba2.device import tune_cpu_allocator  # noqa: E402
from bsmamba2.streaming import CausalStream  # noqa: E402

CAUSAL_MODEL = ROOT / "bsmamba2" / "assets" / "causal.safetensors"


def build(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    if args.config:
        from bsmamba2.model import build_model
        from bsmamba2.train.config import load_config

        torch.manual_seed(0)
        return build_model(load_config(args.config).model, backend=args.backend, device=device).eval()
    from bsmamba2.checkpoints import load_model

    return load_model(args.model, device=device, backend=args.backend)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stream_noise(
    stream: CausalStream, seconds: float, block: int, times: list[float] | None = None
) -> tuple[float, float]:
    """Push ``seconds`` of noise in ``block``-sample pushes; returns (wall, process CPU) processing time, s.
    The noise is made before the clock starts."""
    rate, c, dev = stream.cfg.sample_rate, stream.cfg.audio_channels, stream.device
    gen = torch.Generator(device=dev).manual_seed(1)
    total = round(seconds * rate)
    noise = 0.1 * torch.randn(c, total, generator=gen, device=dev)
    wall = cpu = 0.0
    for start in range(0, total, block):
        x = noise[:, start : start + block]
        sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        stream.push(x)
        sync(dev)
        dt = time.perf_counter() - t0
        wall += dt
        cpu += time.process_time() - c0
        if times is not None:
            times.append(dt)
    return wall, cpu


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_block(stream: CausalStream, block_ms: float, seconds: float) -> dict[str, Any]:
    """One block size: warm-up, then the timed stream (a fresh one)."""
    rate = stream.cfg.sample_rate
    block = max(1, round(block_ms * rate / 1000))
    stream.reset()
    stream_noise(stream, max(1.0, 2 * block / rate), block)  # warm-up: allocator, first-call costs
    stream.reset()
    times: list[float] = []
    seconds = max(seconds, 3 * block / rate)  # at least three pushes
    wall, cpu = stream_noise(stream, seconds, block, times)
    stream.reset()
    ms = sorted(1000 * t for t in times)
    return {
        "block_ms": 1000 * block / rate,
        "block_samples": block,
        "seconds": seconds,
        "pushes": len(ms),
        "rtf": wall / seconds,
        "rtf_cpu_time": cpu / seconds,
        "push_ms_median": statistics.median(ms),
        "push_ms_p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "push_ms_max": ms[-1],
        "load_avg_1m": os.getloadavg()[0],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Model {result['model']} ({result['params']:,} parameters) on {result['device']}, "
        f"{result['threads']} CPU thread(s), {result['env']['date_utc']}, torch {result['env']['torch']}, "
        f"commit {result['env']['commit']}. `{result['command']}`",
        "",
        f"Algorithmic latency: {result['latency_samples']} samples = {result['latency_ms']:.2f} ms at "
        f"{result['sample_rate']} Hz.",
        "",
        "| block | real-time factor (wall) | RTF (process CPU time) | per push: median / p99 / max | load (1 min) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in result["blocks"]:
        lines.append(
            f"| {r['block_ms']:g} ms | {r['rtf']:.3f} | {r['rtf_cpu_time']:.3f} | "
            f"{r['push_ms_median']:.2f} / {r['push_ms_p99']:.2f} / {r['push_ms_max']:.2f} ms | "
            f"{r['load_avg_1m']:.1f} |"
        )
    mem = result.get("memory")
    if mem:
        lines += ["", f"Peak memory after 60 s / {mem['long_s']:g} s of stream: {mem['mb_60s']:.0f} / "
                  f"{mem['mb_long']:.0f} MB ({mem['kind']})."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", default=str(CAUSAL_MODEL), help="a causal model file (default: shipped)")
    parser.add_argument("--config", default=None, help="a training/model config instead (random weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (batch 1)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (torch.set_num_threads; default 1)"
    )
    parser.add_argument(
        "--block-ms", default="10,100,1000", help="push sizes in ms, comma-separated (default 10,100,1000)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length per block size, s")
    parser.add_argument(
        "--long", type=float, default=300.0, help="long stream for the memory check, s (0: skip)"
    )
    parser.add_argument(
        "--out", default=None, help="folder for stream.json / stream.md (default $OUT or ./bench_out)"
    )
    args = parser.parse_args(argv)
    tune_cpu_allocator()  # as the CLI does: freed blocks reused, not page-faulted back in
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    model = build(args, device)
    cfg = model.cfg
    stream = CausalStream(model)
    rate = cfg.sample_rate
    blocks = [measure_block(stream, float(b), args.seconds) for b in args.block_ms.split(",") if b.strip()]
    for r in blocks:
        print(json.dumps(r))

    memory = None
    if args.long > 0:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stream_noise(stream, 60.0, rate)
        short_mb = peak_memory_mb(device)
        stream_noise(stream, max(0.0, args.long - 60.0), rate)  # the same stream, continued
        kind = "peak allocated, CUDA" if device.type == "cuda" else "peak RSS"
        memory = {
            "long_s": max(60.0, args.long),
            "mb_60s": short_mb,
            "mb_long": peak_memory_mb(device),
            "kind": kind,
        }

    name = (
        f"config {os.path.relpath(args.config, ROOT)} (random weights)"
        if args.config
        else Path(args.model).name
    )
    result: dict[str, Any] = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "threads": args.threads,
        "plan": stream._plan is not None,  # the few-kernel frame path (streaming/plan.py) or the model's step
        "sample_rate": rate,
        "latency_samples": cfg.latency,
        "latency_ms": 1000 * cfg.latency / rate,
        "blocks": blocks,
        "memory": memory,
        "command": command_line(),
        "env": env_info(),
    }
    md = markdown(result)
    print(md)
    out = Path(args.out or os.environ.get("OUT") or "bench_out")
    with atomic_write(out / "stream.md") as tmp:
        tmp.write_text(md + "\n")
    with atomic_write(out / "stream.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
