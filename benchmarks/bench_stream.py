"""Real-time streaming of the causal model (issue 15): latency, real-time factor, per-block time, memory.

    python benchmarks/bench_stream.py                          # configs/causal_small.yaml, random weights, CPU
    python benchmarks/bench_stream.py --threads 2 --block-ms 10 --seconds 30 --long 600
    python benchmarks/bench_stream.py --device cuda            # GPU at batch 1
    python benchmarks/bench_stream.py --model causal.safetensors

1. Algorithmic latency of the config: n_fft − 1 + lookahead · hop samples (exact: the stream's output is the
   offline output delayed by it), in samples and ms.
2. Real-time factor: ``--seconds`` of noise pushed in ``--block-ms`` blocks through ``CausalStream`` (the
   engine at the model's rate), processing time ÷ audio time, after one second of warm-up; and the time per
   push (median, p99, max) against the block's duration: a live stream needs every push, not only the mean,
   to finish within its block.
3. Memory flat in stream length: peak RSS (CPU) or peak allocated memory (CUDA) after a 60 s stream and after
   a ``--long`` one, pushed in 1 s blocks (the state does not depend on the block size).

Weights are random (the arithmetic of a trained model is the same). Prints a Markdown table and a JSON line;
writes ``$OUT/stream.md`` and ``$OUT/stream.json`` (``$OUT`` defaults to ./bench_out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bsmamba2.atomic import atomic_write  # noqa: E402
from bsmamba2.device import tune_cpu_allocator  # noqa: E402
from bsmamba2.streaming import CausalStream  # noqa: E402


def build(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    if args.model:
        from bsmamba2.checkpoints import load_model

        return load_model(args.model, device=device, backend=args.backend)
    from bsmamba2.model import build_model
    from bsmamba2.train.config import load_config

    torch.manual_seed(0)
    return build_model(load_config(args.config).model, backend=args.backend, device=device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stream_noise(stream: CausalStream, seconds: float, block: int, times: list[float] | None = None) -> float:
    """Push ``seconds`` of noise in ``block``-sample pushes; returns the processing time (s)."""
    rate, c, dev = stream.cfg.sample_rate, stream.cfg.audio_channels, stream.device
    gen = torch.Generator(device=dev).manual_seed(1)
    busy, left = 0.0, round(seconds * rate)
    while left > 0:
        n = min(block, left)
        x = 0.1 * torch.randn(c, n, generator=gen, device=dev)
        sync(dev)
        t0 = time.perf_counter()
        stream.push(x)
        sync(dev)
        dt = time.perf_counter() - t0
        busy += dt
        if times is not None:
            times.append(dt)
        left -= n
    return busy


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "causal_small.yaml"))
    parser.add_argument("--model", default=None, help="a causal model file instead of --config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--block-ms", type=float, default=10.0, help="push size in ms (default 10)")
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length for the RTF (default 20)")
    parser.add_argument("--long", type=float, default=600.0, help="long stream for the memory check, s")
    args = parser.parse_args(argv)
    tune_cpu_allocator()  # as the CLI does: freed blocks reused, not page-faulted back in
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    model = build(args, device)
    cfg = model.cfg
    stream = CausalStream(model)
    rate = cfg.sample_rate
    block = max(1, round(args.block_ms * rate / 1000))
    params = sum(p.numel() for p in model.parameters())

    stream_noise(stream, 1.0, block)  # warm-up: allocator, first-call costs
    stream.reset()
    times: list[float] = []
    busy = stream_noise(stream, args.seconds, block, times)
    times_ms = sorted(1000 * t for t in times)
    stream.reset()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stream_noise(stream, 60.0, rate)
    short_mb = peak_memory_mb(device)
    stream_noise(stream, max(0.0, args.long - 60.0), rate)  # the same stream, continued
    long_mb = peak_memory_mb(device)

    result: dict[str, Any] = {
        "config": args.model or os.path.relpath(args.config, ROOT),
        "params": params,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m": os.getloadavg()[0],
        "latency_samples": cfg.latency,
        "latency_ms": 1000 * cfg.latency / rate,
        "block_ms": 1000 * block / rate,
        "rtf": busy / args.seconds,
        "push_ms_median": statistics.median(times_ms),
        "push_ms_p99": times_ms[min(len(times_ms) - 1, int(0.99 * len(times_ms)))],
        "push_ms_max": times_ms[-1],
        "peak_mb_60s": short_mb,
        f"peak_mb_{args.long:g}s": long_mb,
        "torch": torch.__version__,
    }
    md = "\n".join(
        [
            "| quantity | value |",
            "| --- | --- |",
            f"| model | {result['config']} ({params:,} parameters) on {result['device']}, {args.threads} threads |",
            f"| algorithmic latency | {cfg.latency} samples = {result['latency_ms']:.2f} ms at {rate} Hz |",
            f"| real-time factor, {result['block_ms']:.0f} ms blocks | {result['rtf']:.3f} |",
            f"| time per push: median / p99 / max | {result['push_ms_median']:.2f} / "
            f"{result['push_ms_p99']:.2f} / {result['push_ms_max']:.2f} ms |",
            f"| peak memory after 60 s / {args.long:g} s | {short_mb:.0f} / {long_mb:.0f} MB |",
            f"| 1-minute load average while measuring | {result['load_avg_1m']:.1f} |",
        ]
    )
    print(md)
    print(json.dumps(result))
    out = Path(os.environ.get("OUT", "bench_out"))
    with atomic_write(out / "stream.md") as tmp:
        tmp.write_text(md + "\n")
    with atomic_write(out / "stream.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
