"""CPU inference, the bundled model and the paper config: the reference SSD against the fast one, fp32 and bf16
autocast, seconds of processing per second of audio (one 8 s chunk, batch 1, after a warm-up; lower is better).

    python benchmarks/bench_cpu_paths.py [--threads 2] [--reps 2] [--paper]

Prints a Markdown table with the CPU, its bf16 capability, torch version, load average and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch

from bsmamba2.checkpoints import load_state, load_weights
from bsmamba2.config import ModelConfig
from bsmamba2.device import cpu_has_native_bf16, tune_cpu_allocator
from bsmamba2.model import build_model

BUNDLED = Path(__file__).resolve().parents[1] / "bsmamba2" / "assets" / "default.safetensors"


def seconds_per_second(model: torch.nn.Module, dtype: torch.dtype | None, reps: int) -> float:
    x = torch.randn(1, 2, 8 * 44100) * 0.1
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        model(x)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best / 8.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--paper", action="store_true", help="also the paper config (48.1M, random weights)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    cfg, state = load_state(BUNDLED)
    configs = [("bundled (6.8M)", cfg, state)] + (
        [("paper (48.1M)", ModelConfig.paper(), None)] if args.paper else []
    )
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"native bf16: {cpu_has_native_bf16()}, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}\n"
    )
    print("| model | SSD | fp32 (s/s) | bf16 autocast (s/s) |\n|---|---|---|---|")
    for name, c, st in configs:
        for backend in ("torch", "fast"):
            torch.manual_seed(0)
            model = build_model(c, backend=backend, device="cpu").eval()
            if st is not None:
                load_weights(model, st, source=str(BUNDLED))
            fp32 = seconds_per_second(model, None, args.reps)
            bf16 = seconds_per_second(model, torch.bfloat16, args.reps)
            print(f"| {name} | {backend} | {fp32:.2f} | {bf16:.2f} |", flush=True)


if __name__ == "__main__":
    main()
