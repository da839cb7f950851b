"""A model from two source trees in one process, interleaved: CPU s per s of audio, fp32 and bf16.

    python benchmarks/cpu_ab.py --base /path/to/other/checkout [--model bundled|paper|both] [--threads 2]
                                [--seconds 4] [--reps 3]

Each tree's ``bsmamba2`` is imported in turn (the modules of the first are set aside before the second is
imported), so both models live in this process and their passes alternate (base, this, this, base, ...):
a change of load hits both. ``bundled`` is the shipped model, ``paper`` the paper config (48.1M) with random
weights drawn from seed 0 (the same in both trees while their constructors draw the same numbers).

Prints the best pass of each per second of audio, wall time and the process's CPU time (with one thread,
what the pass cost without the time it waited for a core on a shared machine), the load average, how far
this tree's output is from the base's (relative L2) and how far each tree's bf16 output is from the base's
fp32 one, and writes ``--out``/cpu_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def load_tree(root: Path, model: str) -> torch.nn.Module:
    """``model`` (bundled or paper) as ``root``'s bsmamba2 builds it (with the allocator tuned, as the CLI does)."""
    for name in [k for k in sys.modules if k == "bsmamba2" or k.startswith("bsmamba2.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        from bsmamba2.checkpoints import load_model
        from bsmamba2.config import ModelConfig
        from bsmamba2.device import tune_cpu_allocator
        from bsmamba2.model import build_model

        tune_cpu_allocator()
        if model == "paper":
            torch.manual_seed(0)
            return build_model(ModelConfig.paper()).eval()
        return load_model(root / "bsmamba2" / "assets" / "default.safetensors", device="cpu").eval()
    finally:
        sys.path.remove(str(root))


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """‖a − ref‖ / ‖ref‖ in float64."""
    return float((a.double() - ref.double()).norm() / ref.double().norm())


def race(models: dict[str, torch.nn.Module], wave: torch.Tensor, reps: int) -> dict[str, Any]:
    """Best s per s of each (tree, dtype), passes interleaved, and the outputs' distances."""
    seconds = wave.shape[-1] / SR
    best: dict[str, float] = {}
    outs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for rep in range(reps + 1):  # rep 0: a warm-up on half a second
            for dtype in ("fp32", "bf16"):
                order = list(models.items())
                for name, model in order if rep % 2 else order[::-1]:  # ABBA: neither tree always first
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                        t, c = time.perf_counter(), time.process_time()
                        y = model(wave if rep else wave[..., : SR // 2])
                        took, cpu = (time.perf_counter() - t) / seconds, (time.process_time() - c) / seconds
                    if rep:
                        key = f"{name} {dtype}"
                        best[key] = min(best.get(key, float("inf")), took)
                        best[f"{key} cpu"] = min(best.get(f"{key} cpu", float("inf")), cpu)
                        outs[key] = y
    result: dict[str, Any] = {}
    for dtype in ("fp32", "bf16"):
        a, b = best[f"base {dtype}"], best[f"this {dtype}"]
        result[dtype] = {
            "base": a,
            "this": b,
            "speed-up": a / b,
            "base_cpu": best[f"base {dtype} cpu"],
            "this_cpu": best[f"this {dtype} cpu"],
            "rel_diff": rel(outs[f"this {dtype}"], outs[f"base {dtype}"]),
            "base_vs_fp32": rel(outs[f"base {dtype}"], outs["base fp32"]),
            "this_vs_fp32": rel(outs[f"this {dtype}"], outs["base fp32"]),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (its root folder)")
    ap.add_argument("--model", choices=["bundled", "paper", "both"], default="bundled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wave = 0.1 * torch.randn(1, 2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    result: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "threads": args.threads,
        "seconds": args.seconds,
    }
    for model in ("bundled", "paper") if args.model == "both" else (args.model,):
        models = {"base": load_tree(args.base.resolve(), model), "this": load_tree(ROOT, model)}
        result[model] = race(models, wave, args.reps)
        for dtype, r in result[model].items():
            print(
                f"{model} {dtype}: base {r['base']:.3f} s/s, this tree {r['this']:.3f} s/s "
                f"({r['speed-up']:.2f}x), CPU time {r['base_cpu']:.3f} -> {r['this_cpu']:.3f} s/s; "
                f"outputs differ by {r['rel_diff']:.1e}; from base fp32: "
                f"base {r['base_vs_fp32']:.1e}, this {r['this_vs_fp32']:.1e}"
            )
    result["load_after"] = os.getloadavg()
    print(
        f"load average before {result['load_before']}, after {result['load_after']}, "
        f"{args.threads} threads, {args.seconds:g} s clip"
    )
    from bsmamba2.atomic import atomic_write  # this tree's, imported last

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "cpu_ab.json", durable=False) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
