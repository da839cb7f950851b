"""The bundled model from two source trees in one process, interleaved: CPU s per s of audio, fp32 and bf16.

    python benchmarks/cpu_ab.py --base /path/to/other/checkout [--threads 2] [--seconds 4] [--reps 3]

Each tree's ``bsmamba2`` is imported in turn (the modules of the first are set aside before the second is
imported), so both models live in this process and their passes alternate (base, this tree, base, ...): a
change of load hits both. Prints the best pass of each per second of audio, the load average and how far
this tree's output is from the base's (relative L2), and writes ``--out``/cpu_ab.json.
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


def load_tree(root: Path) -> torch.nn.Module:
    """The bundled model as ``root``'s bsmamba2 builds it (with the allocator tuned, as the CLI does)."""
    for name in [k for k in sys.modules if k == "bsmamba2" or k.startswith("bsmamba2.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        from bsmamba2.checkpoints import load_model
        from bsmamba2.device import tune_cpu_allocator

        tune_cpu_allocator()
        return load_model(root / "bsmamba2" / "assets" / "default.safetensors", device="cpu").eval()
    finally:
        sys.path.remove(str(root))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (its root folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {"base": load_tree(args.base.resolve()), "this": load_tree(ROOT)}
    wave = 0.1 * torch.randn(1, 2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    best: dict[str, float] = {}
    outs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for rep in range(args.reps + 1):  # rep 0: a warm-up on half a second
            for dtype in ("fp32", "bf16"):
                for name, model in models.items():
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                        t = time.perf_counter()
                        y = model(wave if rep else wave[..., : SR // 2])
                        took = (time.perf_counter() - t) / args.seconds
                    if rep:
                        key = f"{name} {dtype}"
                        best[key] = min(best.get(key, float("inf")), took)
                        outs[key] = y
    result: dict[str, Any] = {"load": os.getloadavg(), "threads": args.threads, "seconds": args.seconds}
    for dtype in ("fp32", "bf16"):
        a, b = best[f"base {dtype}"], best[f"this {dtype}"]
        ref = outs[f"base {dtype}"]
        diff = float((outs[f"this {dtype}"] - ref).norm() / ref.norm())
        result[dtype] = {"base": a, "this": b, "speed-up": a / b, "rel_diff": diff}
        print(
            f"{dtype}: base {a:.3f} s/s, this tree {b:.3f} s/s ({a / b:.2f}x); outputs differ by {diff:.1e}"
        )
    print(f"load average {result['load']}, {args.threads} threads, {args.seconds:g} s clip")
    from bsmamba2.atomic import atomic_write  # this tree's, imported last

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "cpu_ab.json", durable=False) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
