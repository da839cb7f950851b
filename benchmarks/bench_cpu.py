"""CPU inference benchmark: BSMamba2 paper config in float32 and (where the CPU runs it natively: AMX or
AVX512-BF16) bf16 autocast, and a small config, as × real time.

The song is shorter than 4 minutes (``--seconds``, default 16 s: two 8 s chunks) and the 4-minute time is
extrapolated linearly: chunked inference costs the same per chunk, so time ∝ number of chunks. Chunks of 8 s
with no overlap (the official inference: OFFICIAL_SPEC §7), batch 1, the plain-PyTorch chunked SSD.

    python benchmarks/bench_cpu.py [--seconds 16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SMOKE, Deadline, Report, attempt, cpu_flags  # noqa: E402

SR = 44100


def configs() -> list[tuple[str, Any]]:
    from bsmamba2.config import ModelConfig

    if SMOKE:
        return [("tiny", ModelConfig.tiny())]
    from bsmamba2.checkpoints import load_state

    default_cfg, _ = load_state(
        Path(__file__).resolve().parents[1] / "bsmamba2" / "assets" / "default.safetensors"
    )
    return [
        ("paper (48.1M)", ModelConfig.paper()),
        ("bundled default (6.8M)", default_cfg),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=16.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)))
    ap.add_argument("--only", default="", help="run only the configs whose name contains this text")
    ap.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's malloc settings (the CLI tunes them)"
    )
    args = ap.parse_args(argv)
    if not args.default_malloc:
        from bsmamba2.device import tune_cpu_allocator

        tune_cpu_allocator()  # as `bsmamba2 separate` does
    if args.threads:
        torch.set_num_threads(args.threads)
    if SMOKE:
        args.seconds = 1.0
    rep = Report("cpu")
    dl = Deadline(args.budget)
    flags = cpu_flags()
    native_bf16 = bool({"amx_bf16", "avx512_bf16"} & flags)
    rep.extra["cpu_bf16"] = sorted({"amx_bf16", "avx512_bf16", "avx512f", "avx2"} & flags)
    from bsmamba2.apply import apply_model
    from bsmamba2.model import build_model

    song = 0.1 * torch.randn(2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    for name, cfg in configs():
        if args.only not in name:
            continue
        dtypes: list[torch.dtype | None] = [None] + ([torch.bfloat16] if native_bf16 else [])
        for dtype in dtypes:
            if not dl.ok(5):
                rep.errors.append(f"{name} {dtype}: skipped (time budget)")
                continue

            def one(name: str = name, cfg: Any = cfg, dtype: torch.dtype | None = dtype) -> None:
                torch.manual_seed(0)
                model = build_model(cfg, backend="chunked").eval()
                with torch.inference_mode():
                    # warm-up on one short chunk (allocator, oneDNN primitive caches)
                    seg = SR // 2 if SMOKE else 8 * SR
                    apply_model(
                        model, song[:, : seg // 4], segment=seg // 4, overlap=0.0, batch_size=1, dtype=dtype
                    )
                    t = time.perf_counter()
                    out = apply_model(model, song, segment=seg, overlap=0.0, batch_size=1, dtype=dtype)
                    sec = time.perf_counter() - t
                assert torch.isfinite(out).all()
                rep.add(
                    "cpu",
                    dict(
                        model=name,
                        precision="bf16 autocast" if dtype else "fp32",
                        malloc="glibc default" if args.default_malloc else "tuned",
                        threads=torch.get_num_threads(),
                        audio_s=args.seconds,
                        seconds=sec,
                        x_realtime=args.seconds / sec,
                        est_4min_s=sec * 240 / args.seconds,
                    ),
                )

            attempt(rep, f"{name} {dtype}", one)
    if not native_bf16:
        rep.notes.append(
            "No AMX / AVX512-BF16 on this CPU: bf16 autocast would be emulated (slower), so it is skipped."
        )
    rep.notes.append(
        f"Measured on {args.seconds:g} s of audio (8 s chunks, no overlap, batch 1); the 4-minute column "
        "extrapolates linearly in the number of chunks."
    )
    rep.table(
        "cpu",
        ["model", "precision", "malloc", "threads", "audio_s", "seconds", "x_realtime", "est_4min_s"],
        "CPU inference (plain-PyTorch SSD)",
    )
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
