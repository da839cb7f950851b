"""The CPU table of issue 12 in one run: seconds of processing per second of audio (lower is better).

Rows: BSMamba2 at the paper config (48.1M, random weights) and the bundled model (6.8M), each in fp32 and bf16
autocast, *before* (the plain-PyTorch reference scan, ``--backend torch``, the layout the fast path replaced)
and *after* (the fast scan the CPU uses by default), plus what ``precision auto`` picks for it; htdemucs (pip
``demucs``, its published architecture with random weights: no download, the same arithmetic) and the BS-RoFormer
baseline (our ``roformer`` mixer at the paper's size, ``ModelConfig.roformer_paper()``), fp32 and bf16.

Each number is the best of ``--reps`` forward passes over one clip of ``--seconds`` (batch 1, after a warm-up on
a short clip), divided by the clip's length; every row runs in the same process, one after another, so a change
of load shows as a spread between neighbours (the load average is recorded). bf16 rows run only on CPUs with
native bf16 (AMX or AVX512-BF16); elsewhere emulated bf16 is only slower.

    python benchmarks/bench_cpu.py [--quick] [--threads 2] [--out DIR] [--only TEXT] [--seconds 8] [--reps 2]

``--quick``: a 4 s clip, one timed pass per row (about 4 minutes on 2 cores of a recent Xeon). Writes
``DIR/bench_cpu.json`` and ``DIR/bench_cpu.md`` (and ``DIR/stages/cpu.json`` as every benchmark script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SMOKE, Deadline, Report, attempt, cpu_flags  # noqa: E402

SR = 44100
BUNDLED = Path(__file__).resolve().parents[1] / "bsmamba2" / "assets" / "default.safetensors"


def seconds_per_second(model: torch.nn.Module, dtype: torch.dtype | None, seconds: float, reps: int) -> float:
    """Best of ``reps`` forwards of ``model`` on ``seconds`` of stereo noise, per second of audio."""
    wave = 0.1 * torch.randn(1, 2, int(seconds * SR), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        model(wave[..., : SR // 2])  # warm-up: allocator, oneDNN primitive caches
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            out = model(wave)
            best = min(best, time.perf_counter() - t)
    if not torch.isfinite(out).all():
        raise RuntimeError("non-finite output")
    return best / seconds


def bsmamba2_models() -> list[tuple[str, Callable[[str], torch.nn.Module]]]:
    """(name, backend -> model) for the paper config and the bundled model."""
    from bsmamba2.checkpoints import load_state, load_weights
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    def paper(backend: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(ModelConfig.tiny() if SMOKE else ModelConfig.paper(), backend=backend).eval()

    def bundled(backend: str) -> torch.nn.Module:
        cfg, state = load_state(BUNDLED)
        model = build_model(cfg, backend=backend).eval()
        load_weights(model, state, source=str(BUNDLED))
        return model

    return [("BSMamba2 paper (48.1M, random)", paper), ("BSMamba2 bundled (6.8M)", bundled)]


def baselines(seconds: float) -> list[tuple[str, Callable[[], torch.nn.Module]]]:
    def roformer() -> torch.nn.Module:
        from bsmamba2.config import ModelConfig
        from bsmamba2.model import build_model

        torch.manual_seed(0)
        cfg = ModelConfig.tiny(mixer="roformer") if SMOKE else ModelConfig.roformer_paper()
        return build_model(cfg).eval()

    def htdemucs() -> torch.nn.Module:
        from demucs.htdemucs import HTDemucs  # pip install demucs --no-deps

        torch.manual_seed(0)  # the published architecture, its segment set to the clip (no padding to 7.8 s)
        return HTDemucs(sources=["drums", "bass", "other", "vocals"], samplerate=SR, segment=seconds).eval()

    return [("BS-RoFormer baseline (paper size)", roformer), ("htdemucs (demucs 4)", htdemucs)]


def finish(rep: Report, seconds: float, reps: int, native_bf16: bool) -> None:
    """Notes and the table; the report's JSON and Markdown written to $OUT (``--out``)."""
    from bsmamba2.atomic import atomic_write

    rep.notes.append(
        f"Seconds of processing per second of audio (lower is better): best of {reps} forward(s) of one "
        f"{seconds:g} s stereo clip, batch 1, {torch.get_num_threads()} threads, glibc malloc tuned as the CLI "
        "does. *auto* = what `--precision auto` picks for that model on this CPU (measured on 1 s, "
        "bsmamba2.device.measured_cpu_precision). `load` = the 1-minute load average after the row."
    )
    if not native_bf16:
        rep.notes.append(
            "No AMX / AVX512-BF16 on this CPU: bf16 would be emulated (slower), so it is not run."
        )
    rep.table("cpu", ["model", "path", "fp32", "bf16", "auto", "load"], "CPU inference, s per s of audio")
    rep.finish()
    out = Path(os.environ.get("OUT") or "bench_out")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "bench_cpu.md") as tmp:
        tmp.write_text(rep.markdown() + "\n")
    with atomic_write(out / "bench_cpu.json") as tmp:
        data = dict(info=rep.info, extra=rep.extra, rows=rep.rows, errors=rep.errors)
        tmp.write_text(json.dumps(data, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 4 s clip and one timed pass per row")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 8, --quick 4)")
    ap.add_argument("--reps", type=int, default=None, help="timed passes per row (default 2, --quick 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="folder for bench_cpu.json / .md (default $OUT)")
    ap.add_argument("--only", default="", help="run only the rows whose model name contains this text")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 1800)))
    args = ap.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 8.0)
    reps = args.reps or (1 if args.quick else 2)
    if SMOKE:
        seconds, reps = 1.0, 1
    if args.out is not None:
        os.environ["OUT"] = str(args.out)
    from bsmamba2.device import measured_cpu_precision, tune_cpu_allocator

    tune_cpu_allocator()  # as `bsmamba2 separate` does
    torch.set_num_threads(args.threads)
    rep = Report("cpu")
    dl = Deadline(args.budget)
    flags = cpu_flags()
    native_bf16 = bool({"amx_bf16", "avx512_bf16"} & flags)
    rep.extra.update(
        cpu_bf16=sorted({"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"} & flags),
        load_before=os.getloadavg(),
        clip_s=seconds,
        reps=reps,
    )
    precisions: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if native_bf16:
        precisions.append(("bf16", torch.bfloat16))

    def row(model: str, path: str, times: dict[str, float], auto: str = "") -> None:
        rep.add(
            "cpu",
            dict(
                model=model,
                path=path,
                fp32=times.get("fp32"),
                bf16=times.get("bf16"),
                auto=auto,
                load=round(os.getloadavg()[0], 1),
            ),
        )

    def timed(model: torch.nn.Module, where: str) -> dict[str, float]:
        times: dict[str, float] = {}
        for pname, dtype in precisions:
            if dl.ok(5):
                times[pname] = seconds_per_second(model, dtype, seconds, reps)
            else:
                rep.errors.append(f"{where} {pname}: skipped (time budget)")
        return times

    cache = Path(tempfile.mkdtemp()) / "cpu_precision.json"  # a fresh measurement, not the user's cache
    for name, make in bsmamba2_models():
        if args.only not in name:
            continue
        for path, backend in (("before: reference scan", "torch"), ("after: fast scan", "fast")):

            def one(name: str = name, make: Any = make, path: str = path, backend: str = backend) -> None:
                model = make(backend)
                times = timed(model, f"{name} {backend}")
                auto = ""
                if backend == "fast":
                    auto = "bf16" if native_bf16 and measured_cpu_precision(model, cache) else "fp32"
                row(name, path, times, auto)

            attempt(rep, f"{name} {backend}", one)
    for name, make_baseline in baselines(seconds):
        if args.only not in name:
            continue
        attempt(
            rep, name, lambda name=name, make=make_baseline: row(name, "torch eager", timed(make(), name))
        )
    finish(rep, seconds, reps, native_bf16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
