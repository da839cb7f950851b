"""SSD microbenchmark on BSMamba2's two real SSD shapes: our fused Triton kernel vs mamba-ssm's Triton kernel
(``mamba_chunk_scan_combined``) vs the plain-PyTorch chunked reference, side by side in one run.

Shapes (paper config, batch 5 × 8 s; 16 heads × headdim 64, d_state 128, 1 group; x/B/C bf16, dt/A/D fp32):
    time path: 310 sequences (5 × 62 bands) × 801 frames
    band path: 4005 sequences (5 × 801 frames) × 62 bands
Reports forward and forward+backward medians, peak extra memory, achieved TFLOP/s and GB/s against the bf16
matrix-product peak and the copy bandwidth measured in the same run, the error of each fast path against a
float64 reference on a subset of sequences, and a sweep over our kernels' launch configurations.

    python benchmarks/bench_ssd.py                 # everything (on a CUDA GPU)
    python benchmarks/bench_ssd.py --only compiled # torch.compile of the chunked path only
    python benchmarks/bench_ssd.py --prewarm 3 --of 12   # compile part 3 of 12 of all kernels (suite use)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    DEV,
    SMOKE,
    Deadline,
    Report,
    attempt,
    cuda_time_ms,
    empty_cache,
    have_device,
    load_mamba_ssd,
    mamba_autotuners,
    measure_peaks,
    peak_memory_gib,
    sync,
)
from bsmamba2.model.mixers.ssd import ssd_chunked  # noqa: E402

SHAPES = {"time": (310, 801), "band": (4005, 62)}
H, P, N, G = 16, 64, 128, 1
if SMOKE:
    SHAPES = {"time": (2, 130), "band": (3, 62)}
    H, P, N = 2, 16, 16
MAMBA_CHUNKS = {"time": (256,), "band": (256, 64)}
NAMES = ["x", "dt", "A", "B", "C", "D"]


def make_inputs(b: int, l: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs in Mamba2's ranges (never zeros): dt log-uniform in [1e-3, 0.1], A = −U(1, 16)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    kw: dict[str, Any] = dict(device=DEV, generator=g)
    bf = torch.bfloat16
    return {
        "x": torch.randn(b, l, H, P, dtype=bf, **kw),
        "dt": torch.exp(torch.rand(b, l, H, **kw) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)),
        "A": -(torch.rand(H, **kw) * 15 + 1),
        "B": torch.randn(b, l, G, N, dtype=bf, **kw) / N**0.25,
        "C": torch.randn(b, l, G, N, dtype=bf, **kw) / N**0.25,
        "D": torch.randn(H, **kw),
        "dy": torch.randn(b, l, H, P, dtype=bf, **kw),
    }


def work(b: int, l: int, T: int = 64) -> dict[str, float]:
    """The two numbers of METHOD.md for one shape.

    FLOPs: the chunked algorithm's matrix products with chunks of T (CB once per group and chunk; per head the
    intra-chunk product, and for more than one chunk the state's output and update products), ×3 for
    forward+backward (the usual backward ≈ 2× forward). Bytes: every input read once and every output written
    once (forward: x, B, C, dt → y; backward: x, B, C, dt, dy → dx, dB, dC, ddt), bf16 activations, fp32 dt.
    """
    nc = math.ceil(l / T)
    per_chunk = 2 * T * T * N * G / H + 2 * T * T * P + (4 * T * N * P if nc > 1 else 0)  # per head
    fwd = b * H * nc * per_chunk
    tok = b * l
    act = tok * H * P * 2
    bc = 2 * tok * G * N * 2
    dtb = tok * H * 4
    return {
        "fwd_flop": fwd,
        "fwdbwd_flop": 3 * fwd,
        "fwd_bytes": 2 * act + bc + dtb,
        "bwd_bytes": 3 * act + 2 * bc + 2 * dtb,
    }


def methods(mamba: Callable[..., Any] | None) -> dict[str, Callable[..., torch.Tensor]]:
    from bsmamba2.model.mixers.ssd_triton import ssd_triton

    ms: dict[str, Callable[..., torch.Tensor]] = {"ours (triton)": lambda *a: ssd_triton(*a)}  # type: ignore[dict-item]
    if mamba is not None:
        for c in (256, 64):
            ms[f"mamba-ssm c{c}"] = lambda x, dt, A, B, C, D, c=c: mamba(x, dt, A, B, C, c, D=D)
    ms["chunked c64 (pytorch)"] = lambda *a: _autocast(ssd_chunked, *a)
    return ms


def _autocast(fn: Callable[..., Any], *args: torch.Tensor) -> torch.Tensor:
    """The plain-PyTorch path as the model runs it: under bf16 autocast (its einsums mix bf16 and fp32)."""
    with torch.autocast(DEV.type, dtype=torch.bfloat16):
        return fn(*args, chunk_size=64)


def fwd_bwd_closure(
    fn: Callable[..., torch.Tensor], ins: dict[str, torch.Tensor]
) -> tuple[Callable, Callable]:
    args = [ins[k].detach().requires_grad_(True) for k in NAMES]

    def fwd() -> None:
        with torch.no_grad():
            fn(*[a.detach() for a in args])

    def fwdbwd() -> None:
        y = fn(*args)
        torch.autograd.grad(y, args, ins["dy"])

    return fwd, fwdbwd


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def accuracy(fn: Callable[..., torch.Tensor], ins: dict[str, torch.Tensor], nseq: int) -> dict[str, float]:
    """Errors of y and of every gradient against float64 ``ssd_chunked`` on the first ``nseq`` sequences."""
    sub = {k: (v[:nseq] if v.dim() > 1 else v) for k, v in ins.items()}
    out = {}
    for tag, f, conv in (
        ("ref", lambda *a: ssd_chunked(*a, chunk_size=64), lambda t: t.double()),
        ("fn", fn, lambda t: t),
    ):
        args = [conv(sub[k]).detach().requires_grad_(True) for k in NAMES]
        y = f(*args)
        grads = torch.autograd.grad(y, args, conv(sub["dy"]))
        out[tag] = [y, *grads]
    keys = ["y"] + ["d" + k for k in NAMES]
    return {k: rel(a, r) for k, a, r in zip(keys, out["fn"], out["ref"])}


def kernel_resources() -> list[dict[str, Any]]:
    """Registers, spills, shared memory of every compiled variant of our kernels (from Triton's JIT caches)."""
    import bsmamba2.model.mixers.ssd_triton as st

    rows = []
    for name in ("_fwd_single_kernel", "_bwd_single_kernel", "_fwd_chunked_kernel", "_bwd_chunked_kernel"):
        fn = getattr(st, name)
        caches: list[Any] = []
        try:
            caches = [c[0] for c in fn.device_caches.values()]
        except AttributeError:
            caches = list(getattr(fn, "cache", {}).values())
        for cache in caches:
            for k in cache.values():
                md = k.metadata
                rows.append(
                    dict(
                        kernel=name.strip("_"),
                        num_warps=getattr(md, "num_warps", None),
                        num_stages=getattr(md, "num_stages", None),
                        regs=getattr(k, "n_regs", None),
                        spills=getattr(k, "n_spills", None),
                        shared_kib=round(getattr(md, "shared", 0) / 1024, 1),
                    )
                )
    return rows


def speed_up_mamba(mods: list[Any]) -> None:
    """Shorter autotuning trials for mamba-ssm's kernels (5 ms warm-up, 20 ms timing per candidate)."""
    from triton.testing import do_bench

    for at in mamba_autotuners(mods):
        at._do_bench = lambda kernel_call, quantiles: do_bench(
            kernel_call, warmup=5, rep=20, quantiles=quantiles
        )


def run_main(rep: Report, dl: Deadline, only: str | None) -> None:
    peaks = measure_peaks()
    rep.extra["peaks"] = peaks
    rep.notes.append(
        f"Ceilings measured in this run: bf16 matmul {peaks['bf16_matmul_tflops']} TFLOP/s (8192³, random), "
        f"device copy {peaks['copy_gbps']} GB/s (read + write)."
    )
    mamba = None
    mods: list[Any] = []
    if only is None:
        try:
            mamba, version, mods = load_mamba_ssd()
            rep.extra["mamba_ssm_version"] = version
            rep.notes.append(
                f"mamba-ssm {version}: `mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`."
            )
            speed_up_mamba(mods)
            if SMOKE:  # the interpreter cannot time candidates: keep one configuration per kernel
                for at in mamba_autotuners(mods):
                    at.configs = at.configs[:1]
        except Exception as e:
            rep.error("import mamba_ssm", e)
    ms = methods(mamba)
    if only == "compiled":
        ms = {}
        compiled = torch.compile(ssd_chunked, dynamic=False)
        ms["compiled c64 (torch.compile)"] = lambda *a: _autocast(compiled, *a)
    for shape, (b, l) in SHAPES.items():
        w = work(b, l)
        ins = make_inputs(b, l, seed=1)
        if mods:
            for at in mamba_autotuners(mods):
                at.cache.clear()  # tune mamba-ssm's kernels for each shape, as if it ran alone
        for name, fn in ms.items():
            if name.startswith("mamba") and int(name.split("c")[-1]) not in MAMBA_CHUNKS[shape]:
                continue
            if not dl.ok(15):
                rep.errors.append(f"{shape}/{name}: skipped (time budget)")
                continue

            def one(
                name: str = name,
                fn: Callable = fn,
                ins: dict = ins,
                shape: str = shape,
                b: int = b,
                l: int = l,
                w: dict = w,
            ) -> None:
                fwd, fwdbwd = fwd_bwd_closure(fn, ins)
                t0 = time.time()
                fwdbwd()  # compile / autotune
                sync()
                first = time.time() - t0
                t_f = cuda_time_ms(fwd)
                t_fb = cuda_time_ms(fwdbwd)
                t_fb2 = cuda_time_ms(fwdbwd)  # twice: the spread says what difference is noise
                _, mem = peak_memory_gib(fwdbwd)
                row = dict(
                    shape=f"{shape} {b}×{l}",
                    method=name,
                    fwd_ms=t_f,
                    fwdbwd_ms=t_fb,
                    fwdbwd_ms_repeat=t_fb2,
                    bwd_ms=t_fb - t_f,
                    extra_mem_gib=mem,
                    tflops=w["fwdbwd_flop"] / t_fb / 1e9,
                    gbps=(w["fwd_bytes"] + w["bwd_bytes"]) / t_fb / 1e6,
                    first_call_s=round(first, 1),
                )
                row["pct_matmul_peak"] = 100 * row["tflops"] / peaks["bf16_matmul_tflops"]
                row["pct_copy_bw"] = 100 * row["gbps"] / peaks["copy_gbps"]
                rep.add("speed", row)

            attempt(rep, f"{shape}/{name}", one)
        # accuracy on a subset of sequences (float64 reference)
        nseq = 8 if shape == "time" else 64
        for name, fn in ms.items():
            if name.startswith("chunked") or not dl.ok(10):
                continue
            if name.startswith("mamba") and int(name.split("c")[-1]) not in MAMBA_CHUNKS[shape]:
                continue

            def acc(
                name: str = name, fn: Callable = fn, ins: dict = ins, shape: str = shape, nseq: int = nseq
            ) -> None:
                errs = accuracy(fn, ins, nseq)
                rep.add("accuracy", dict(shape=f"{shape} ({nseq} seqs)", method=name, **errs))

            attempt(rep, f"accuracy {shape}/{name}", acc)
        # floors
        peaks_f = peaks["bf16_matmul_tflops"] * 1e12
        bw = peaks["copy_gbps"] * 1e9
        rep.add(
            "floors",
            dict(
                shape=f"{shape} {b}×{l}",
                gflop_fwdbwd=w["fwdbwd_flop"] / 1e9,
                gb_fwdbwd=(w["fwd_bytes"] + w["bwd_bytes"]) / 1e9,
                compute_floor_ms=1e3 * w["fwdbwd_flop"] / peaks_f,
                memory_floor_ms=1e3 * (w["fwd_bytes"] + w["bwd_bytes"]) / bw,
            ),
        )
        # our launch-configuration sweep
        if only is None:
            attempt(rep, f"sweep {shape}", lambda shape=shape, ins=ins: sweep(rep, dl, shape, ins))
        del ins
        empty_cache()


def sweep(rep: Report, dl: Deadline, shape: str, ins: dict[str, torch.Tensor]) -> None:
    import bsmamba2.model.mixers.ssd_triton as st

    kinds = ("fwd_chunked", "bwd_chunked") if shape == "time" else ("fwd_single", "bwd_single")
    fn = methods(None)["ours (triton)"]
    fwd, fwdbwd = fwd_bwd_closure(fn, ins)
    for kind in kinds:
        for w, s in st.CONFIGS[kind]:
            if not dl.ok(8):
                return
            st.force_config(kind, w, s)
            try:
                t = cuda_time_ms(fwd if kind.startswith("fwd") else fwdbwd)
                rep.add(
                    "sweep",
                    dict(
                        shape=shape,
                        kernel=kind,
                        num_warps=w,
                        num_stages=s,
                        ms=t,
                        timed="fwd" if kind.startswith("fwd") else "fwd+bwd",
                    ),
                )
            finally:
                st.force_config(kind, None)


def prewarm(part: int, of: int) -> None:
    """Compile part ``part`` of ``of`` of every kernel variant the suite will use (small batches, real lengths).

    Run ``of`` of these in parallel before the benchmarks: Triton's on-disk cache then holds every compiled
    variant, and the timed processes only load them.
    """
    import bsmamba2.model.mixers.ssd_triton as st

    jobs: list[Callable[[], None]] = []
    for shape, (_, l) in SHAPES.items():
        kinds = ("fwd_chunked", "bwd_chunked") if shape == "time" else ("fwd_single", "bwd_single")
        for kind in kinds:
            for w, s in st.CONFIGS[kind]:

                def ours(l: int = l, kind: str = kind, w: int = w, s: int = s) -> None:
                    st.force_config(kind, w, s)
                    ins = make_inputs(3, l)
                    _, fb = fwd_bwd_closure(methods(None)["ours (triton)"], ins)
                    fb()
                    st.force_config(kind, None)

                jobs.append(ours)
    for i, job in enumerate(jobs):
        if i % of == part:
            t = time.time()
            try:
                job()
            except Exception as e:
                print(f"prewarm ours job {i}: {type(e).__name__}: {e}", flush=True)
            print(f"prewarm ours job {i}: {time.time() - t:.1f}s", flush=True)
    try:
        mamba, version, mods = load_mamba_ssd()
    except Exception as e:
        print(f"prewarm: mamba-ssm unavailable ({e})", flush=True)
        return
    for at in mamba_autotuners(mods):
        cfgs = list(at.configs)
        at.configs = cfgs[part::of] or [cfgs[part % len(cfgs)]]
    speed_up_mamba(mods)
    for shape, (_, l) in SHAPES.items():
        for c in MAMBA_CHUNKS[shape]:
            t = time.time()
            try:
                ins = make_inputs(3, l)
                _, fb = fwd_bwd_closure(lambda x, dt, A, B, C, D, c=c: mamba(x, dt, A, B, C, c, D=D), ins)
                fb()
                sync()
            except Exception as e:
                print(f"prewarm mamba {shape} c{c}: {type(e).__name__}: {e}", flush=True)
            print(f"prewarm mamba {shape} c{c}: {time.time() - t:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["compiled"], default=None)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)))
    ap.add_argument("--prewarm", type=int, default=None)
    ap.add_argument("--of", type=int, default=1)
    args = ap.parse_args(argv)
    if not have_device():
        print("bench_ssd: needs a CUDA GPU (or BENCH_SMOKE=1 for a CPU check of the script)")
        return 0
    if args.prewarm is not None:
        prewarm(args.prewarm, args.of)
        return 0
    rep = Report("ssd" if args.only is None else f"ssd_{args.only}")
    dl = Deadline(args.budget)
    attempt(rep, "main", lambda: run_main(rep, dl, args.only))
    rep.table(
        "speed",
        ["shape", "method", "fwd_ms", "bwd_ms", "fwdbwd_ms", "fwdbwd_ms_repeat", "extra_mem_gib", "tflops",
         "pct_matmul_peak", "gbps", "pct_copy_bw", "first_call_s"],
        "SSD forward / backward (median ms; bf16 x/B/C, fp32 dt/A/D; TFLOP/s counts 3× the chunked forward's products)",
    )  # fmt: skip
    speed = rep.rows.get("speed", [])
    ratios = []
    for shape in SHAPES:
        ours = [r for r in speed if r["shape"].startswith(shape) and r["method"].startswith("ours")]
        for r in speed:
            if r["shape"].startswith(shape) and not r["method"].startswith("ours") and ours:
                ratios.append(dict(shape=shape, baseline=r["method"], baseline_ms=r["fwdbwd_ms"], ours_ms=ours[0]["fwdbwd_ms"], speedup=r["fwdbwd_ms"] / ours[0]["fwdbwd_ms"]))  # fmt: skip
    for r in ratios:
        rep.add("speedup", r)
    rep.table(
        "speedup",
        ["shape", "baseline", "baseline_ms", "ours_ms", "speedup"],
        "Forward+backward speed-up of our kernel",
    )
    rep.table("accuracy", ["shape", "method", "y", "dx", "ddt", "dA", "dB", "dC", "dD"], "‖Δ‖/‖ref‖ against float64 (same bf16 inputs)")  # fmt: skip
    rep.table("floors", ["shape", "gflop_fwdbwd", "gb_fwdbwd", "compute_floor_ms", "memory_floor_ms"], "Floors (METHOD.md's two numbers)")  # fmt: skip
    rep.table("sweep", ["shape", "kernel", "num_warps", "num_stages", "timed", "ms"], "Launch-configuration sweep of our kernels")  # fmt: skip
    if args.only is None:
        res = attempt(rep, "kernel resources", kernel_resources)
        for r in res or []:
            rep.add("resources", r)
        rep.table("resources", ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_kib"], "Compiled variants of our kernels")  # fmt: skip
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
