"""First GPU data point (issue 2): the paper config's training step with the plain-PyTorch SSD.

Measures forward + loss + backward + AdamW at batch B × 8 s stereo under bf16 autocast, and peak memory,
for a given SSD backend. Prints one Markdown row per setting.

    python benchmarks/reference_step.py --backend chunked --batch 1 5
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch

from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.train.loss import separation_loss


def step_time(
    cfg: ModelConfig, backend: str, batch: int, seconds: float, iters: int, recompute: bool
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(cfg, backend=backend).cuda().train()
    model.recompute = recompute
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    n = int(seconds * cfg.sample_rate)
    mix = torch.randn(batch, cfg.audio_channels, n, device="cuda") * 0.1
    tgt = torch.randn(batch, cfg.num_stems, cfg.audio_channels, n, device="cuda") * 0.05

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            est = model(mix)
        loss = separation_loss(est, tgt).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocator, kernels)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    return dt, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="chunked")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--mixer", default="mamba2")
    ap.add_argument("--recompute", action="store_true", help="activation checkpointing of the dual path")
    args = ap.parse_args()
    cfg = ModelConfig.paper() if args.mixer == "mamba2" else ModelConfig.roformer_paper()
    print(f"# {torch.cuda.get_device_name()} · torch {torch.__version__} · {datetime.date.today()}")
    print("| model | backend | recompute | batch | step (s) | peak memory (GiB) |\n|---|---|---|---|---|---|")
    for b in args.batch:
        try:
            dt, mem = step_time(cfg, args.backend, b, args.seconds, args.iters, args.recompute)
            print(
                f"| {args.mixer} | {args.backend} | {b} × {args.seconds:g} s | {dt:.3f} | {mem:.1f} |",
                flush=True,
            )
        except torch.OutOfMemoryError:
            print(
                f"| {args.mixer} | {args.backend} | {b} × {args.seconds:g} s | OOM | > {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} |"
            )
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
