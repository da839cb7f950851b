"""Training-step benchmark: BSMamba2 (paper config) with the plain-PyTorch and the fused Triton SSD, and the
BS-RoFormer baseline, in one run on one GPU.

Same step for every model, as ``bsmamba2.train.loop`` does it: a batch of 5 stereo 8 s clips (random audio),
forward under bf16 autocast, the paper's loss in float32 (``separation_loss``: 10·L1 time + multi-resolution
STFT L1), backward, gradient clipping at 3, fused AdamW. Reports the median step time (after warm-up steps that
include compilation and autotuning), its spread, and the peak allocated memory (weights, gradients, AdamW
state and activations). Out-of-memory is recorded, not fatal.

    python benchmarks/bench_train.py [--batch 5] [--seconds 8] [--steps 6]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    DEV,
    SMOKE,
    Deadline,
    Report,
    apply_best_ssd_configs,
    attempt,
    cuda_time_steps,
    empty_cache,
    have_device,
    max_allocated_gib,
    reset_peak,
    sync,
)
from benchmarks.count_flops import forward_tflops  # noqa: E402

ONLY: list[str] = []
# the SSD's split backward as shipped, before any variant overrides it
from bsmamba2.model.mixers import ssd_triton as _st  # noqa: E402

SHIPPED_SPLIT_BWD = _st.SPLIT_BACKWARD


def variants() -> list[dict[str, Any]]:
    """The models timed. ``pair``: fused bidirectional blocks as ``PairedMamba2Block`` (the new path: both
    directions at once) or as two ``FusedMamba2Block`` calls on flipped copies (the old path)."""
    from bsmamba2.config import ModelConfig

    paper = ModelConfig.tiny() if SMOKE else ModelConfig.paper()
    roformer = ModelConfig.tiny("roformer") if SMOKE else ModelConfig.roformer_paper()
    # the study config (configs/study_bsmamba2.yaml): dim 128, depth 4, batch 8, fused glue, no recompute
    study = (
        paper
        if SMOKE
        else paper.replace(dim=128, depth=4, mamba2=dict(expand=2, d_state=64, headdim=32), mask_mlp_mult=2)
    )
    fused = dict(backend="triton", fused=True)
    return [
        dict(name="BSMamba2, SSD triton", cfg=paper, backend="triton"),
        dict(name="BSMamba2, SSD chunked (PyTorch)", cfg=paper, backend="chunked"),
        dict(name="BS-RoFormer (Table I baseline)", cfg=roformer, backend="auto"),
        dict(name="BSMamba2, SSD triton, recompute", cfg=paper, backend="triton", recompute=True),
        dict(name="BSMamba2 paper old path (fused glue per direction; recompute)", cfg=paper, recompute=True, pair=False, **fused),
        dict(name="BSMamba2 paper old path, SSD backward one program per sequence (fused glue per direction; recompute)", cfg=paper, recompute=True, pair=False, split_bwd=False, **fused),
        dict(name="BSMamba2 paper new path (paired directions; recompute)", cfg=paper, recompute=True, pair=True, **fused),
        dict(name="BSMamba2 paper new path (paired directions; no recompute)", cfg=paper, pair=True, **fused),
        dict(name="BSMamba2 paper new path + Triton conv (paired directions; recompute)", cfg=paper, recompute=True, pair=True, triton_conv=True, **fused),
        dict(name="BSMamba2 study old path (fused glue per direction)", cfg=study, batch=8, pair=False, **fused),
        dict(name="BSMamba2 study old path, SSD backward one program per sequence (fused glue per direction)", cfg=study, batch=8, pair=False, split_bwd=False, **fused),
        dict(name="BSMamba2 study new path (paired directions)", cfg=study, batch=8, pair=True, **fused),
        dict(name="BSMamba2 paper kernel blocks (one Function per block; saves the input: recomputes inside)", cfg=paper, kernels="input", **fused),
        dict(name="BSMamba2 paper kernel blocks (one Function per block; saves its activations)", cfg=paper, kernels="all", **fused),
        dict(name="BSMamba2 study kernel blocks (one Function per block; saves its activations)", cfg=study, batch=8, kernels="all", **fused),
        dict(name="BSMamba2 study kernel blocks (one Function per block; saves the input: recomputes inside)", cfg=study, batch=8, kernels="input", **fused),
        dict(name="BSMamba2 study, whole model torch.compile (eager blocks, Triton SSD)", cfg=study, batch=8, backend="triton", compile=True),
        dict(name="BSMamba2 study, whole model torch.compile over the fused glue", cfg=study, batch=8, pair=False, compile=True, **fused),
    ]  # fmt: skip


def train_step_factory(
    model: Any, batch: int, seconds: float, sr: int, stems: int, params: Any = None
) -> Any:
    from bsmamba2.train.loss import separation_loss

    n = int(round(seconds * sr))
    g = torch.Generator(device=DEV).manual_seed(0)
    mix = 0.1 * torch.randn(batch, 2, n, device=DEV, generator=g)  # (B, C, N)
    tgt = 0.1 * torch.randn(batch, stems, 2, n, device=DEV, generator=g)  # (B, S, C, N)
    params = list(model.parameters() if params is None else params)
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01, fused=DEV.type == "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=DEV.type, dtype=torch.bfloat16):
            est = model(mix)  # (B, S, C, N)
        loss = separation_loss(est, tgt).total  # float32
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()

    return step


KERNEL_GROUPS = [  # (group, substrings of a CUDA kernel's name), first match wins
    ("SSD scan (ours, Triton)", ("_fwd_single", "_bwd_single", "_fwd_chunk", "_bwd_chunk", "_sweeps")),
    (
        "mixer kernels (ours, Triton: conv, gated norm)",
        ("_gated_", "_conv_d", "_prenorm", "_fwd_kernel", "_bwd_act", "_bwd_x"),
    ),
    ("matmul (cuBLAS/CUTLASS)", ("gemm", "cutlass", "nvjet", "xmma", "sm90_", "splitk")),
    ("compiled fusions (inductor)", ("triton_",)),
    ("FFT (STFT/iSTFT)", ("fft", "radix", "regular_fft", "vector_fft")),
    ("convolution", ("conv", "depthwise")),
    ("reductions (norms, sums)", ("reduce", "norm")),
    ("copies/transposes/cat", ("copy", "memcpy", "cat", "transpose", "flip", "index", "gather", "scatter")),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
]


def profile_step(rep: Report, name: str, step: Any) -> None:
    """One step under torch.profiler: CUDA time by kernel group and the top kernels (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = DEV.type == "cuda"  # on CPU (BENCH_SMOKE) the script's own check: operator self-times instead
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        step()
        sync()
    kernels: dict[str, float] = {}
    for e in prof.events():
        if cuda and e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] = kernels.get(e.name, 0.0) + e.device_time / 1e3  # ms
        elif not cuda:
            kernels[e.name] = kernels.get(e.name, 0.0) + e.self_cpu_time_total / 1e3
    total = sum(kernels.values())
    groups: dict[str, float] = {}
    for k, ms in kernels.items():
        low = k.lower()
        g = next((g for g, keys in KERNEL_GROUPS if any(s in low for s in keys)), "other")
        groups[g] = groups.get(g, 0.0) + ms
    for g, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        rep.add("profile", dict(model=name, group=g, cuda_ms=ms, share_pct=100 * ms / total))
    rep.add("profile", dict(model=name, group="total (sum of kernel times)", cuda_ms=total, share_pct=100.0))
    for k, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[:15]:
        rep.add("kernels", dict(model=name, kernel=k[:110], cuda_ms=ms, share_pct=100 * ms / total))


def run(rep: Report, dl: Deadline, batch: int, seconds: float, steps: int, profile: list[str]) -> None:
    from bsmamba2.model import build_model

    for v in variants():
        if ONLY and not any(o in v["name"] for o in ONLY):
            continue
        if not dl.ok(20):
            rep.errors.append(f"{v['name']}: skipped (time budget)")
            continue

        def one(v: dict[str, Any] = v, batch: int = v.get("batch", batch) if not SMOKE else batch) -> None:
            from bsmamba2.model.mixers import mamba2, ssd_triton

            torch.manual_seed(0)
            fused = bool(v.get("fused"))
            mamba2.PAIR_DIRECTIONS = bool(v.get("pair", True))
            mamba2.TRITON_CONV = bool(v.get("triton_conv", False))
            mamba2.KERNEL_BLOCKS = v.get("kernels")  # mixer_triton.KernelMamba2Block, or None
            # the SSD's chunked backward: split (sweeps + per-chunk kernel; the default) or one program per
            # (sequence, head) walking its chunks; a variant may override it
            ssd_triton.SPLIT_BACKWARD = v.get("split_bwd", SHIPPED_SPLIT_BWD)
            model = build_model(v["cfg"], backend=v["backend"], device=DEV, fused=fused).train()
            if v.get("recompute"):
                model.recompute = True
            nparams = sum(p.numel() for p in model.parameters())
            # ``compile``: the whole model under torch.compile, as training's ``compile: true`` runs it
            run_model = torch.compile(model) if v.get("compile") else model
            step = train_step_factory(
                run_model, batch, seconds, v["cfg"].sample_rate, v["cfg"].num_stems, params=model.parameters()
            )
            row: dict[str, Any] = dict(model=v["name"], params_m=nparams / 1e6, batch=f"{batch}×{seconds:g}s")
            try:
                t0 = time.time()
                step()  # first step: compilation, autotuning
                sync()
                row["first_step_s"] = time.time() - t0
                if v.get("kernels"):  # the blocks fall back to the eager ones on inputs they refuse
                    from bsmamba2.model.mixers import mixer_triton

                    if mixer_triton.CALLS[0] == 0:
                        raise RuntimeError(
                            "kernel blocks fell back to the eager blocks (kernels_apply refused)"
                        )
                reset_peak()
                ms, spread = cuda_time_steps(step, warmup=2, reps=steps)
                row.update(step_ms=ms, spread_ms=spread, peak_mem_gib=max_allocated_gib())
                row["clips_per_s"] = batch / (ms / 1e3)
                row["steps_per_s"] = 1e3 / ms
                # forward + backward ≈ 3 forwards; recompute's extra forward is not useful work
                row["useful_tflops"] = 3 * batch * forward_tflops(v["cfg"], seconds) / (ms / 1e3)
                if profile and any(p in v["name"] for p in profile):
                    profile_step(rep, v["name"], step)
            except torch.cuda.OutOfMemoryError:
                row.update(step_ms=None, peak_mem_gib=None, status="OOM")
            rep.add("train", row)
            del model, run_model, step
            if v.get("compile"):
                torch._dynamo.reset()
            gc.collect()
            empty_cache()

        attempt(rep, v["name"], one)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--profile", default="", help="comma-separated substrings of variant names to profile")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: run only matching variants (names hold no commas from 'old path' on)",
    )
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)))
    ap.add_argument("--tag", default="", help="results file stages/train_TAG.json (one per process)")
    ap.add_argument(
        "--sweep-configs", action="store_true", help="use bench_ssd's fastest swept SSD configurations"
    )
    args = ap.parse_args(argv)
    if not have_device():
        print("bench_train: needs a CUDA GPU (or BENCH_SMOKE=1 for a CPU check of the script)")
        return 0
    if SMOKE:
        args.batch, args.seconds, args.steps = 2, 0.1, 2
    prof = [p for p in args.profile.split(",") if p]
    global ONLY
    ONLY = [p for p in args.only.split(",") if p]
    rep = Report("train" + (f"_{args.tag}" if args.tag else ""))
    if args.sweep_configs:
        attempt(rep, "ssd configs", lambda: apply_best_ssd_configs(rep))
    else:
        rep.notes.append(
            "SSD kernel launch configurations: the ones shipped for this GPU (ssd_triton.ARCH_CONFIGS)."
        )
    attempt(rep, "main", lambda: run(rep, Deadline(args.budget), args.batch, args.seconds, args.steps, prof))
    rep.table(
        "train",
        ["model", "params_m", "batch", "step_ms", "spread_ms", "steps_per_s", "clips_per_s", "useful_tflops", "peak_mem_gib", "first_step_s", "status"],
        "Training step (bf16 autocast, paper loss, clip 3, fused AdamW; median of timed steps)",
    )  # fmt: skip
    rep.table(
        "profile", ["model", "group", "cuda_ms", "share_pct"], "Where one training step's GPU time goes"
    )
    rep.table("kernels", ["model", "kernel", "cuda_ms", "share_pct"], "Top kernels of the profiled step")
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
