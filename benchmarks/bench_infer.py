"""Inference benchmark on one GPU: BSMamba2 (paper config; fused Triton and plain-PyTorch SSD) and the
BS-RoFormer baseline, bf16 autocast.

1. Throughput on a 4-minute stereo song through ``bsmamba2.apply.apply_model`` (chunking + overlap-add, the
   package's defaults: overlap 0.5, linear cross-fade) at 8 / 16 / 32 s chunks, as × real time
   (audio seconds per wall-clock second, end to end on GPU tensors, the faster of 2 runs after a warm-up).
   BSMamba2 with the fused SSD and BS-RoFormer; the plain-PyTorch SSD only in the scaling curve.
2. The length-scaling curve: one forward pass of a single 8 / 16 / 32 / 64 s chunk (time and peak memory;
   out-of-memory is recorded, not fatal).
3. CUDA graphs: an 8 s × 4 batch forward captured once and replayed, against the eager forward.

    python benchmarks/bench_infer.py [--song-seconds 240]
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
    allocated_gib,
    apply_best_ssd_configs,
    attempt,
    cuda_time_ms,
    empty_cache,
    have_device,
    max_allocated_gib,
    reset_peak,
    sync,
)

SR = 44100


ONLY: list[str] = []


def models() -> list[dict[str, Any]]:
    from bsmamba2.config import ModelConfig

    paper = ModelConfig.tiny() if SMOKE else ModelConfig.paper()
    roformer = ModelConfig.tiny("roformer") if SMOKE else ModelConfig.roformer_paper()
    out = [
        dict(name="BSMamba2 (triton + fused)", cfg=paper, backend="triton", fused=True),
        dict(name="BS-RoFormer", cfg=roformer, backend="auto"),
        dict(name="BSMamba2 (triton)", cfg=paper, backend="triton"),
        dict(name="BSMamba2 (chunked)", cfg=paper, backend="chunked"),
    ]
    if ONLY:
        out = [v for v in out if any(o in str(v["name"]) for o in ONLY)]
    return (
        [v for v in out if v["backend"] != "triton"] if SMOKE else out
    )  # the interpreter is too slow for whole songs (bench_train covers it)


def build(v: dict[str, Any]) -> torch.nn.Module:
    from bsmamba2.model import build_model

    torch.manual_seed(0)
    return build_model(v["cfg"], backend=v["backend"], device=DEV, fused=bool(v.get("fused"))).eval()


def song_throughput(rep: Report, dl: Deadline, song_s: float) -> None:
    from bsmamba2.apply import apply_model

    g = torch.Generator(device=DEV).manual_seed(0)
    song = 0.1 * torch.randn(2, int(song_s * SR), device=DEV, generator=g)  # (C, N)
    sizes = ((8, 4), (16, 2), (32, 1)) if not SMOKE else ((0.1, 2), (0.2, 1))
    for v in models():
        if v["backend"] == "chunked" and not SMOKE:
            continue  # the plain-PyTorch path is in the length-scaling curve; a whole song would not fit the budget
        model = build(v)
        for chunk_s, batch in sizes:
            if not dl.ok(15):
                rep.errors.append(f"song {v['name']} {chunk_s}s: skipped (time budget)")
                continue

            def one(
                chunk_s: int = chunk_s, batch: int = batch, model: torch.nn.Module = model, v: dict = v
            ) -> None:
                def go() -> torch.Tensor:
                    with torch.no_grad():
                        return apply_model(
                            model, song, segment=int(chunk_s * SR), batch_size=batch, dtype=torch.bfloat16
                        )

                with torch.no_grad():  # warm-up on a short excerpt: compilation, autotuning, cuFFT plans
                    seg = int(chunk_s * SR)
                    apply_model(
                        model, song[:, : 2 * seg], segment=seg, batch_size=batch, dtype=torch.bfloat16
                    )
                times = []
                for _ in range(2):
                    sync()
                    t = time.perf_counter()
                    out = go()
                    sync()
                    times.append(time.perf_counter() - t)
                assert torch.isfinite(out).all()
                sec = sorted(times)[0 if len(times) < 3 else len(times) // 2]
                rep.add(
                    "song",
                    dict(
                        model=v["name"],
                        chunk_s=chunk_s,
                        batch=batch,
                        overlap=0.5,
                        seconds=sec,
                        x_realtime=song_s / sec,
                    ),
                )

            attempt(rep, f"song {v['name']} {chunk_s}s", one)
        del model
        gc.collect()
        empty_cache()


def length_scaling(rep: Report, dl: Deadline) -> None:
    for v in models():
        model = build(v)
        for seconds in (8, 16, 32, 64) if not SMOKE else (0.1, 0.2):
            if not dl.ok(10):
                rep.errors.append(f"scaling {v['name']} {seconds}s: skipped (time budget)")
                continue
            x = 0.1 * torch.randn(1, 2, int(seconds * SR), device=DEV)
            row: dict[str, Any] = dict(
                model=v["name"], seconds=seconds, frames=1 + int(seconds * SR) // v["cfg"].hop_length
            )

            def fwd(x: torch.Tensor = x, model: torch.nn.Module = model) -> None:
                with torch.no_grad(), torch.autocast(DEV.type, dtype=torch.bfloat16):
                    model(x)

            try:
                fwd()
                sync()
                base = allocated_gib()
                reset_peak()
                fwd()
                sync()
                row["peak_mem_gib"] = max_allocated_gib() - base
                row["fwd_ms"] = cuda_time_ms(fwd, warmup_ms=10, rep_ms=50)
                row["x_realtime"] = seconds / (row["fwd_ms"] / 1e3)
            except torch.cuda.OutOfMemoryError:
                row["status"] = "OOM"
            except Exception as e:  # noqa: BLE001  (recorded; the curve goes on)
                row["status"] = f"{type(e).__name__}: {str(e)[:80]}"
            rep.add("scaling", row)
            del x
            empty_cache()
        del model
        gc.collect()
        empty_cache()


def cuda_graphs(rep: Report, dl: Deadline) -> None:
    if DEV.type != "cuda":
        return
    for v in models():
        if v["backend"] == "chunked" or not dl.ok(15):
            continue

        def one(v: dict[str, Any] = v) -> None:
            model = build(v)
            static_in = 0.1 * torch.randn(4, 2, 8 * SR, device="cuda")

            def fwd(model: torch.nn.Module = model) -> torch.Tensor:
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return model(static_in)

            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fwd()  # warm-up outside the graph (autotuning, cuFFT plans)
            torch.cuda.current_stream().wait_stream(s)
            eager_ms = cuda_time_ms(fwd, warmup_ms=10, rep_ms=100)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = fwd()
            graph.replay()
            torch.cuda.synchronize()
            ref = fwd()
            err = ((static_out - ref).norm() / ref.norm()).item()
            graph_ms = cuda_time_ms(graph.replay, warmup_ms=10, rep_ms=100)
            rep.add(
                "graphs",
                dict(
                    model=v["name"],
                    input="4×8s",
                    eager_ms=eager_ms,
                    graph_ms=graph_ms,
                    speedup=eager_ms / graph_ms,
                    graph_vs_eager_rel_err=err,
                ),
            )
            del graph, model, static_out

        attempt(rep, f"graphs {v['name']}", one)
        gc.collect()
        empty_cache()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--song-seconds", type=float, default=240.0)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)))
    ap.add_argument("--only", default="", help="comma-separated substrings of model names")
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph part")
    args = ap.parse_args(argv)
    global ONLY
    ONLY = [o for o in args.only.split(",") if o]
    if not have_device():
        print("bench_infer: needs a CUDA GPU (or BENCH_SMOKE=1 for a CPU check of the script)")
        return 0
    if SMOKE:
        args.song_seconds = 0.5
    rep = Report("infer")
    attempt(rep, "ssd configs", lambda: apply_best_ssd_configs(rep))
    dl = Deadline(args.budget)
    attempt(
        rep,
        "song",
        lambda: song_throughput(rep, Deadline(min(dl.left(), args.budget * 0.55)), args.song_seconds),
    )
    attempt(rep, "scaling", lambda: length_scaling(rep, Deadline(min(dl.left() - 5, args.budget * 0.45))))
    if not args.no_graphs:
        attempt(rep, "graphs", lambda: cuda_graphs(rep, dl))
    rep.table(
        "song",
        ["model", "chunk_s", "batch", "overlap", "seconds", "x_realtime"],
        f"{args.song_seconds / 60:g}-minute stereo song, chunked inference with overlap-add (bf16 autocast)",
    )
    rep.table(
        "scaling",
        ["model", "seconds", "frames", "fwd_ms", "x_realtime", "peak_mem_gib", "status"],
        "One forward pass of a single chunk (batch 1, bf16 autocast): length scaling",
    )
    rep.table(
        "graphs",
        ["model", "input", "eager_ms", "graph_ms", "speedup", "graph_vs_eager_rel_err"],
        "CUDA graphs for inference",
    )
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
