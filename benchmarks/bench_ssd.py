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
    python benchmarks/bench_ssd.py --only split    # the chunked backward's forms only (time path)
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
# Head layouts the triage checks: the paper's, and a smaller one (head dim 32, d_state 64: dim 128, expand 2, as
# the project's short training studies use), each at its real training batch (paper: 5 clips; small: 8).
TRIAGE_DIMS: dict[str, tuple[int, int, int, dict[str, tuple[int, int]]]] = {
    "paper": (H, P, N, SHAPES),
    "small": (8, 32, 64, {"time": (496, 801), "band": (6408, 62)}),
}
if SMOKE:
    TRIAGE_DIMS = {"paper": (H, P, N, SHAPES), "small": (2, 16, 32, {"time": (2, 70), "band": (3, 40)})}
MAMBA_CHUNKS = {"time": (256,), "band": (256, 64)}
NAMES = ["x", "dt", "A", "B", "C", "D"]


def make_inputs(b: int, l: int, seed: int = 0, h: int = H, p: int = P, n: int = N) -> dict[str, torch.Tensor]:
    """Random inputs in Mamba2's ranges (never zeros): dt log-uniform in [1e-3, 0.1], A = −U(1, 16)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    kw: dict[str, Any] = dict(device=DEV, generator=g)
    bf = torch.bfloat16
    return {
        "x": torch.randn(b, l, h, p, dtype=bf, **kw),
        "dt": torch.exp(torch.rand(b, l, h, **kw) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)),
        "A": -(torch.rand(h, **kw) * 15 + 1),
        "B": torch.randn(b, l, G, n, dtype=bf, **kw) / n**0.25,
        "C": torch.randn(b, l, G, n, dtype=bf, **kw) / n**0.25,
        "D": torch.randn(h, **kw),
        "dy": torch.randn(b, l, h, p, dtype=bf, **kw),
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
    """The SSD implementations compared, ours last (were it to fault, the others' numbers are already in)."""
    from bsmamba2.model.mixers.ssd_triton import ssd_triton

    ms: dict[str, Callable[..., torch.Tensor]] = {}
    if mamba is not None:
        for c in (256, 64):
            ms[f"mamba-ssm c{c}"] = lambda x, dt, A, B, C, D, c=c: mamba(x, dt, A, B, C, c, D=D)
    ms["chunked c64 (pytorch)"] = lambda *a: _autocast(ssd_chunked, *a)
    ms["ours (triton)"] = lambda *a: ssd_triton(*a)  # type: ignore[misc]
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


def time_directions(rep: Report, shape: str) -> None:
    """Both directions of a bidirectional layer (b sequences each, A and D per direction): two calls of our
    kernels, one per direction, against one launch on the stacked batch (``ssd_triton_bidirectional``, the
    backward half by reversed indexing). Forward and forward+backward medians."""
    from bsmamba2.model.mixers.ssd_triton import ssd_triton, ssd_triton_bidirectional

    b, l = SHAPES[shape]
    ins = make_inputs(2 * b, l, seed=2)
    ins["A"] = torch.stack([ins["A"], ins["A"].flip(0)])
    ins["D"] = torch.stack([ins["D"], ins["D"].flip(0)])

    def two_calls(x, dt, A, B, C, D):  # type: ignore[no-untyped-def]
        ys = [
            ssd_triton(x[s], dt[s], A[i], B[s], C[s], D[i])
            for i, s in enumerate((slice(0, b), slice(b, None)))
        ]
        return torch.cat(ys)  # type: ignore[arg-type]

    w = work(2 * b, l)
    for name, fn in (
        ("2 calls (one per direction)", two_calls),
        ("1 launch (both directions)", ssd_triton_bidirectional),
    ):
        fwd, fwdbwd = fwd_bwd_closure(fn, ins)
        fwdbwd()
        sync()
        t_f, t_fb = cuda_time_ms(fwd), cuda_time_ms(fwdbwd)
        rep.add("directions", dict(shape=f"{shape} 2×{b}×{l}", method=name, fwd_ms=t_f, fwdbwd_ms=t_fb, tflops=w["fwdbwd_flop"] / t_fb / 1e9))  # fmt: skip
    del ins
    empty_cache()


def time_split(rep: Report, dl: Deadline, shape: str = "time") -> None:
    """The chunked backward two ways on the time path, behind the same forward (one program per (sequence,
    head), its shipped chunk): split (``ssd_triton_split``: the sweeps, then every chunk in parallel; the
    default) at chunk 64 and 32, and one program per (sequence, head) walking its chunks (the opt-out, its
    shipped chunk). Forward and forward + backward medians, both directions in one launch as the model calls
    it; the backward's time is their difference."""
    import bsmamba2.model.mixers.ssd_triton as st

    b, l = SHAPES[shape]
    ins = make_inputs(2 * b, l, seed=3)
    ins["A"] = torch.stack([ins["A"], ins["A"].flip(0)])
    ins["D"] = torch.stack([ins["D"], ins["D"].flip(0)])
    fwd, fwdbwd = fwd_bwd_closure(st.ssd_triton_bidirectional, ins)
    w = work(2 * b, l)
    fwd_chunk = st._chunk("fwd_chunked", DEV)
    shipped = st.SPLIT_BACKWARD
    try:
        for split, chunk in ((True, 64), (True, 32), (False, None)):
            if not dl.ok(10):
                rep.errors.append(f"backward variants: split={split} chunk={chunk} skipped (time budget)")
                continue
            st.SPLIT_BACKWARD = split
            if split:
                st.force_config("bwd_chunk", *st.shipped_config("bwd_chunk", DEV)[0], chunk=chunk)
            try:
                fwdbwd()
                sync()
                t_f, t_fb = cuda_time_ms(fwd), cuda_time_ms(fwdbwd)
                _, mem = peak_memory_gib(fwdbwd)
            finally:
                st.force_config("bwd_chunk", None)
            label = "split (sweeps + per chunk)" if split else "one program per sequence"
            bwd_chunk = chunk if split else st._chunk("bwd_chunked", DEV)
            rep.add("split backward", dict(
                shape=f"{shape} 2×{b}×{l}", backward=label, chunks_fwd_bwd=f"{fwd_chunk}/{bwd_chunk}", fwd_ms=t_f,
                fwdbwd_ms=t_fb, bwd_ms=t_fb - t_f, extra_mem_gib=mem, tflops=w["fwdbwd_flop"] / t_fb / 1e9))  # fmt: skip
    finally:
        st.SPLIT_BACKWARD = shipped
    del ins
    empty_cache()


def split_table(rep: Report) -> None:
    rep.table("split backward", ["shape", "backward", "chunks_fwd_bwd", "fwd_ms", "bwd_ms", "fwdbwd_ms", "extra_mem_gib", "tflops"], "Chunked backward, split vs one program per sequence (ours, both directions in one launch, same forward)")  # fmt: skip


def run_main(rep: Report, dl: Deadline, only: str | None, warm: bool = False, quick: bool = False) -> None:
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
    if quick:  # the plain-PyTorch reference is slow and not what the comparison is about
        ms.pop("chunked c64 (pytorch)", None)
    if only == "compiled":
        ms = {}
        compiled = torch.compile(ssd_chunked, dynamic=False)
        ms["compiled c64 (torch.compile)"] = lambda *a: _autocast(compiled, *a)
        if warm:  # compile forward + backward once per shape (fills inductor's caches), time nothing
            for shape, (b, l) in SHAPES.items():
                t0 = time.time()
                _, fb = fwd_bwd_closure(ms["compiled c64 (torch.compile)"], make_inputs(b, l, seed=1))
                attempt(rep, f"warm compiled {shape}", fb)
                sync()
                print(f"warm compiled {shape}: {time.time() - t0:.1f}s", flush=True)
            return
    # Pass 1: ours on both shapes (the headline; its variants were triaged in their own processes), with its
    # accuracy, floors and launch sweep. Pass 2: the baselines, which may spend long compiling and autotuning.
    ours = {k: v for k, v in ms.items() if k.startswith("ours")}
    others = {k: v for k, v in ms.items() if not k.startswith("ours")}
    for group in (ours, others):
        for shape, (b, l) in SHAPES.items():
            ins = make_inputs(b, l, seed=1)
            if mods and group is others:
                for at in mamba_autotuners(mods):
                    at.cache.clear()  # tune mamba-ssm's kernels for each shape, as if it ran alone
            for name, fn in group.items():
                if name.startswith("mamba") and int(name.split("c")[-1]) not in MAMBA_CHUNKS[shape]:
                    continue
                if not dl.ok(15):
                    rep.errors.append(f"{shape}/{name}: skipped (time budget)")
                    continue
                attempt(
                    rep,
                    f"{shape}/{name}",
                    lambda n=name, f=fn, i=ins, s=shape: time_one(rep, peaks, n, f, i, s),
                )
                if not name.startswith("chunked") and dl.ok(10):
                    nseq = 8 if shape == "time" else 64
                    attempt(rep, f"accuracy {shape}/{name}", lambda n=name, f=fn, i=ins, s=shape, k=nseq: rep.add(
                        "accuracy", dict(shape=f"{s} ({k} seqs)", method=n, **accuracy(f, i, k))))  # fmt: skip
            if group is ours or not ours:
                w = work(b, l)
                rep.add(
                    "floors",
                    dict(
                        shape=f"{shape} {b}×{l}",
                        gflop_fwdbwd=w["fwdbwd_flop"] / 1e9,
                        gb_fwdbwd=(w["fwd_bytes"] + w["bwd_bytes"]) / 1e9,
                        compute_floor_ms=w["fwdbwd_flop"] / peaks["bf16_matmul_tflops"] / 1e9,
                        memory_floor_ms=(w["fwd_bytes"] + w["bwd_bytes"]) / peaks["copy_gbps"] / 1e6,
                    ),
                )
            if group is ours and only is None and not quick:
                attempt(rep, f"sweep {shape}", lambda shape=shape, ins=ins: sweep(rep, dl, shape, ins))
            if group is ours and only is None and dl.ok(20):
                del ins
                empty_cache()
                attempt(rep, f"directions {shape}", lambda shape=shape: time_directions(rep, shape))
                if shape == "time":
                    attempt(rep, "split backward", lambda: time_split(rep, dl))
                continue
            del ins
            empty_cache()


def time_one(
    rep: Report, peaks: dict[str, float], name: str, fn: Callable, ins: dict[str, torch.Tensor], shape: str
) -> None:
    """Forward and forward+backward medians (the latter twice: their spread says what is noise), peak memory."""
    b, l = SHAPES[shape]
    w = work(b, l)
    fwd, fwdbwd = fwd_bwd_closure(fn, ins)
    t0 = time.time()
    fwdbwd()  # compile / autotune
    sync()
    first = time.time() - t0
    t_f = cuda_time_ms(fwd)
    t_fb = cuda_time_ms(fwdbwd)
    t_fb2 = cuda_time_ms(fwdbwd)
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


def safe_file() -> Path:
    from benchmarks.common import stages_dir

    return stages_dir() / "ssd_safe.json"


def sweep_variants(shape: str) -> list[tuple[str, tuple[int, int, int], int | None]]:
    """(kernel, (num_warps, num_stages, maxnreg), chunk) candidates our kernels are timed with on ``shape``.

    After a triage run (``--triage-all``), exactly the variants that passed it on the paper's head layout;
    without one, the library's default candidates only (a variant that faults would end this process).
    """
    import json

    import bsmamba2.model.mixers.ssd_triton as st

    kinds = ("fwd_chunked", "bwd_chunked") if shape == "time" else ("fwd_single", "bwd_single")
    try:
        safe = json.loads(safe_file().read_text())["variants"]
        return [(k, tuple(c), ch) for k, c, ch in safe if k in kinds]  # type: ignore[misc]
    except (OSError, ValueError, KeyError):
        pass
    if shape == "time":
        return [(k, c, t) for k in kinds for t in (64, 32) for c in st.CONFIGS[k]]
    return [(k, c, None) for k in kinds for c in st.CONFIGS[k]]


def sweep(rep: Report, dl: Deadline, shape: str, ins: dict[str, torch.Tensor]) -> None:
    """Time every launch configuration (and chunk length) of our kernels, then the best pair together."""
    import bsmamba2.model.mixers.ssd_triton as st

    fn = methods(None)["ours (triton)"]
    fwd, fwdbwd = fwd_bwd_closure(fn, ins)
    best: dict[str, tuple[float, tuple[int, int, int], int | None]] = {}
    best_default: dict[str, tuple[float, tuple[int, int, int], int | None]] = {}
    for kind, cfg, chunk in sweep_variants(shape):
        if not dl.ok(8):
            break
        st.force_config(kind, *cfg, chunk=chunk)
        try:
            t = cuda_time_ms(fwd if kind.startswith("fwd") else fwdbwd)
        finally:
            st.force_config(kind, None)
        timed = "fwd" if kind.startswith("fwd") else "fwd+bwd"
        rep.add(
            "sweep",
            dict(shape=shape, kernel=kind, num_warps=cfg[0], num_stages=cfg[1], maxnreg=cfg[2], chunk=chunk, timed=timed, ms=t),
        )  # fmt: skip
        if kind not in best or t < best[kind][0]:
            best[kind] = (t, cfg, chunk)
        # the later stages (training, inference) may only use the library's candidates (8 warps, triaged)
        if tuple(cfg) in st.CONFIGS[kind] and (kind not in best_default or t < best_default[kind][0]):
            best_default[kind] = (t, cfg, chunk)
    for kind, (_, cfg, chunk) in best_default.items():
        rep.extra.setdefault("best_configs", {})[kind] = [*cfg, chunk]
    for kind, (_, cfg, chunk) in best.items():
        rep.extra.setdefault("best_any", {})[kind] = [*cfg, chunk]
    if len(best) < 2:
        return
    for kind, (_, cfg, chunk) in best.items():
        st.force_config(kind, *cfg, chunk=chunk)
    try:
        t_f, t_fb = cuda_time_ms(fwd), cuda_time_ms(fwdbwd)
        b, l = SHAPES[shape]
        w = work(b, l)
        rep.add(
            "speed",
            dict(
                shape=f"{shape} {b}×{l}",
                method="ours (best swept)",
                fwd_ms=t_f,
                fwdbwd_ms=t_fb,
                bwd_ms=t_fb - t_f,
                tflops=w["fwdbwd_flop"] / t_fb / 1e9,
                gbps=(w["fwd_bytes"] + w["bwd_bytes"]) / t_fb / 1e6,
            ),
        )
    finally:
        for kind in best:
            st.force_config(kind, None)


def prewarm(part: int, of: int) -> None:
    """Compile part ``part`` of ``of`` of mamba-ssm's autotuning candidates (small batches, real lengths).

    Run ``of`` of these in parallel before the benchmarks: Triton's on-disk cache then holds every candidate, and
    the timed process only loads them. (Our own kernels are compiled by the triage.)
    """
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


# ---- triage: does each kernel variant run, and compute the right thing, on this machine? ------------------------
def triage_variants() -> list[dict[str, Any]]:
    """The variants to triage, most needed first (the pool runs them in this order): the library's candidates on
    both head layouts at chunk 64, then at chunk 32, then the benchmark-only candidates on the paper's layout,
    then the 4-warp single-chunk forward on the small layout (the variant that faulted once, to confirm the
    diagnosis and see which workaround cures it)."""
    import bsmamba2.model.mixers.ssd_triton as st

    kinds = ("fwd_single", "bwd_single", "fwd_chunked", "bwd_chunked")
    out: list[dict[str, Any]] = []

    def add(dims: str, kind: str, cfg: tuple[int, int, int], chunk: int | None) -> None:
        v = dict(dims=dims, kind=kind, cfg=list(cfg), chunk=chunk)
        if v not in out:
            out.append(v)

    for chunk in (64, 32):
        for dims in TRIAGE_DIMS:
            for kind in kinds:
                for cfg in st.CONFIGS[kind]:
                    add(dims, kind, cfg, chunk if kind.endswith("chunked") else None)
    for kind in kinds:
        for cfg in st.EXTRA_CONFIGS[kind]:
            for chunk in [64, 32] if kind.endswith("chunked") else [None]:
                add("paper", kind, cfg, chunk)
    add("small", "fwd_single", (4, 1, 0), None)
    return out


def triage_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one variant at its real size 5 times, then check it against float64 on a subset of sequences."""
    import bsmamba2.model.mixers.ssd_triton as st

    h, p, n, shapes = TRIAGE_DIMS[spec["dims"]]
    b, l = shapes["time" if spec["kind"].endswith("chunked") else "band"]
    res: dict[str, Any] = dict(spec)
    t0 = time.time()
    try:
        # exactly two kernels run: this variant, and its partner (forward <-> backward) at its first default
        partner = {"fwd": "bwd", "bwd": "fwd"}[spec["kind"][:3]] + spec["kind"][3:]
        st.force_config(partner, *st.CONFIGS[partner][0])
        st.force_config(spec["kind"], *spec["cfg"], chunk=spec["chunk"])
        ins = make_inputs(b, l, seed=7, h=h, p=p, n=n)
        fn = methods(None)["ours (triton)"]
        fwd, fwdbwd = fwd_bwd_closure(fn, ins)
        for _ in range(5):
            (fwd if spec["kind"].startswith("fwd") else fwdbwd)()
            sync()
        fwdbwd()
        sync()
        errs = accuracy(fn, ins, nseq=8 if l > 64 else 64)
        worst = max(errs.values())
        res.update(worst=worst, worst_of=max(errs, key=lambda k: errs[k]))
        res["status"] = "pass" if worst < 1e-2 else ("nan" if worst != worst else "wrong")
    except Exception as e:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        res.update(status="crash" if "illegal" in msg.lower() or "CUDA" in msg else "error", error=msg)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def triage_all(procs: int, budget: float) -> None:
    """Run every variant in its own process (a fault ends only that process), retry faulting ones with the two
    known workarounds (no wgmma: DISABLE_MMA_V3=1; the CUDA toolkit's newer ptxas), and write the variants that
    passed to ``$OUT/stages/ssd_safe.json`` for the later stages."""
    import json
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import bsmamba2.model.mixers.ssd_triton as st

    rep = Report("triage")
    dl = Deadline(budget)
    base_cache = os.environ.get("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))
    ptxas = next(
        (c for c in ("/usr/local/cuda/bin/ptxas", shutil.which("ptxas") or "") if c and os.path.exists(c)),
        None,
    )
    workarounds: dict[str, dict[str, str]] = {
        "no_wgmma": {"DISABLE_MMA_V3": "1", "TRITON_CACHE_DIR": base_cache + "-nowgmma"}
    }
    if ptxas:
        workarounds["cuda_ptxas"] = {"TRITON_PTXAS_PATH": ptxas, "TRITON_CACHE_DIR": base_cache + "-ptxas"}

    def run(spec: dict[str, Any], env_extra: dict[str, str] | None = None) -> dict[str, Any]:
        env = dict(os.environ, **(env_extra or {}))
        if dl.left() < 20:
            return dict(spec, status="skipped (time budget)")
        left = dl.left()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--triage-one", json.dumps(spec)],
                env=env, capture_output=True, text=True, timeout=min(150.0, left),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return dict(spec, status="timeout")
        for line in proc.stdout.splitlines():
            if line.startswith("TRIAGE_RESULT "):
                return dict(json.loads(line[len("TRIAGE_RESULT ") :]))
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return dict(spec, status="crash" if proc.returncode < 0 else "error", error=tail[0][:160])

    variants = triage_variants()
    with ThreadPoolExecutor(procs) as pool:
        results = list(pool.map(run, variants))
    for r in results:
        r["workaround"] = ""
        rep.add("triage", r)
    failed = [r for r in results if r["status"] in ("crash", "wrong", "nan", "error", "timeout")]
    for name, env in workarounds.items():
        if not failed or not dl.ok(30):
            break
        with ThreadPoolExecutor(procs) as pool:
            retry = list(
                pool.map(
                    lambda r, env=env: run({k: r[k] for k in ("dims", "kind", "cfg", "chunk")}, env), failed
                )
            )
        for r in retry:
            r["workaround"] = name
            rep.add("triage", r)
    # What the later stages may use: the first workaround level (none, then each workaround) under which every
    # kernel has a default configuration that passed on both head layouts; the paper-layout variants that
    # passed at that level are what the sweep may time.
    levels = [("", {})] + [(k, v) for k, v in workarounds.items()]
    safe: dict[str, Any] = {}
    for name, env in levels:
        passed = {
            (r["dims"], r["kind"], tuple(r["cfg"]), r["chunk"])
            for r in rep.rows.get("triage", [])
            if r["status"] == "pass" and r["workaround"] in ("", name)
        }
        configs: dict[str, list[list[int]]] = {}
        chunks: dict[str, int] = {}
        for kind in st.CONFIGS:
            # the module's shipped chunk first: the later stages get the fastest variant that passed, not 64
            chunk_order = (
                sorted((64, 32), key=lambda c, k=kind: c != st.CHUNK_T[k]) if kind in st.CHUNK_T else []
            )
            for chunk in chunk_order or [None]:
                ok = [
                    list(c)
                    for c in st.CONFIGS[kind]
                    if all((d, kind, c, chunk) in passed for d in TRIAGE_DIMS)
                ]
                if ok:
                    configs[kind] = ok
                    if chunk is not None:
                        chunks[kind] = chunk
                    break
        variants_ok = sorted(
            {(k, c, ch) for d, k, c, ch in passed if d == "paper"}, key=lambda v: (v[0], v[1], v[2] or 0)
        )
        safe = {
            "workaround": name,
            "env": env,
            "variants": [[k, list(c), ch] for k, c, ch in variants_ok],
            "configs": configs,
            "chunks": chunks,
        }
        if set(configs) == set(st.CONFIGS):
            break
    else:
        rep.notes.append(
            f"Not every kernel has a configuration that passed, even with workarounds: {safe['configs']}"
        )
    safe_file().write_text(json.dumps(safe))
    rep.extra["safe"] = safe
    rep.notes.append(
        "Each variant ran in its own process at full size (5 runs), then was checked against float64 on a subset; "
        "pass = every output and gradient within 1e-2. Failed ones were retried with workarounds: "
        + ", ".join(f"{k} ({' '.join(f'{a}={b}' for a, b in v.items() if a != 'TRITON_CACHE_DIR')})" for k, v in workarounds.items())
        + f". Safe for the later stages: {json.dumps(safe)}"
    )  # fmt: skip
    rep.table("triage", ["dims", "kind", "cfg", "chunk", "workaround", "status", "worst", "worst_of", "seconds", "error"], "Kernel variant triage")  # fmt: skip
    rep.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["compiled", "split"], default=None)
    ap.add_argument("--warm", action="store_true", help="with --only compiled: compile once, time nothing")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)))
    ap.add_argument("--prewarm", type=int, default=None)
    ap.add_argument("--of", type=int, default=1)
    ap.add_argument("--triage-all", action="store_true")
    ap.add_argument("--triage-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="no launch sweep, no plain-PyTorch row")
    args = ap.parse_args(argv)
    if not have_device():
        print("bench_ssd: needs a CUDA GPU (or BENCH_SMOKE=1 for a CPU check of the script)")
        return 0
    if args.prewarm is not None:
        prewarm(args.prewarm, args.of)
        return 0
    if args.triage_one is not None:
        import json

        print("TRIAGE_RESULT " + json.dumps(triage_one(json.loads(args.triage_one)), default=str), flush=True)
        return 0
    if args.triage_all:
        triage_all(args.procs, args.budget)
        return 0
    rep = Report("ssd" if args.only is None else f"ssd_{args.only}" + ("_warm" if args.warm else ""))
    dl = Deadline(args.budget)
    if args.only == "split":  # the chunked backward's forms only (about a minute on an H200)
        attempt(rep, "split backward", lambda: time_split(rep, dl))
        split_table(rep)
        rep.finish()
        return 0
    attempt(rep, "main", lambda: run_main(rep, dl, args.only, args.warm, args.quick))
    if args.warm:
        rep.save()
        return 0
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
        for o in ours:
            for r in speed:
                if r["shape"].startswith(shape) and not r["method"].startswith("ours"):
                    ratios.append(dict(shape=shape, ours=o["method"], baseline=r["method"], baseline_ms=r["fwdbwd_ms"], ours_ms=o["fwdbwd_ms"], speedup=r["fwdbwd_ms"] / o["fwdbwd_ms"]))  # fmt: skip
    for r in ratios:
        rep.add("speedup", r)
    rep.table(
        "speedup",
        ["shape", "ours", "baseline", "ours_ms", "baseline_ms", "speedup"],
        "Forward+backward speed-up of our kernel (same run, same inputs)",
    )
    rep.table("directions", ["shape", "method", "fwd_ms", "fwdbwd_ms", "tflops"], "Both directions of a layer: two calls vs one launch (ours)")  # fmt: skip
    split_table(rep)
    rep.table("accuracy", ["shape", "method", "y", "dx", "ddt", "dA", "dB", "dC", "dD"], "‖Δ‖/‖ref‖ against float64 (same bf16 inputs)")  # fmt: skip
    rep.table("floors", ["shape", "gflop_fwdbwd", "gb_fwdbwd", "compute_floor_ms", "memory_floor_ms"], "Floors (METHOD.md's two numbers)")  # fmt: skip
    rep.table("sweep", ["shape", "kernel", "num_warps", "num_stages", "maxnreg", "chunk", "timed", "ms"], "Launch-configuration sweep of our kernels")  # fmt: skip
    if rep.extra.get("best_any"):
        rep.notes.append(
            f"Fastest swept variants [num_warps, num_stages, maxnreg, chunk]: {rep.extra['best_any']} (row 'ours "
            f"(best swept)'); fastest among the library's candidates, used by bench_train and bench_infer: "
            f"{rep.extra.get('best_configs')}."
        )
    if args.only is None:
        res = attempt(rep, "kernel resources", kernel_resources)
        for r in res or []:
            rep.add("resources", r)
        rep.table("resources", ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_kib"], "Compiled variants of our kernels")  # fmt: skip
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
