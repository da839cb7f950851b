"""ONNX Runtime against torch on the CPU: seconds of processing per second of audio, and peak memory.

One table per run. Every row runs in its own subprocess (so its peak RSS is its own, and an out-of-memory kill
costs one row, not the run): the same random stereo signal through the same chunk engine
(``bsmamba2.apply.apply_model``: 8 s chunks, no overlap, batch 1), so only the network differs:

- torch fp32 on the default CPU SSD (``fast``), and bf16 autocast where the CPU runs bf16 natively;
- ONNX Runtime fp32 on the exported graph (``bsmamba2 export``), and int8 (``bsmamba2 export --int8``:
  dynamic quantisation of the graph's weight MatMuls) where the CPU has VNNI.

Each row gives s per s of audio, the peak RSS of its process (after a warm-up on a quarter chunk, so the
warm-up's smaller peak does not hide anything) and its stems' uSDR against torch fp32's. ONNX Runtime's CPU
provider has no bf16 kernels (MatMul, Add and Exp in bf16 fail with NOT_IMPLEMENTED in onnxruntime 1.32), so
a bf16 graph is not measured. The load average is recorded before and after: on a shared machine it says how
much the numbers can be trusted. ``--quick`` (the bundled model alone, 8 s of audio: one export instead of
two, as the paper config's export alone takes minutes) stays within a few minutes on 2 cores. On a bigger
machine, pin it to two cores: ``taskset -c 0,1 python benchmarks/bench_onnx.py``.

    python benchmarks/bench_onnx.py [--quick] [--seconds 16] [--chunk 8] [--threads 2] [--only bundled]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SMOKE, Deadline, Report, cpu_flags  # noqa: E402

SR = 44100
CHUNK_S = 8.0  # the paper's chunk (OFFICIAL_SPEC §7); --chunk changes it for both engines
CONFIGS = {"bundled": "bundled default (6.8M)", "paper": "paper (48.1M, random weights)"}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def torch_model(config: str) -> nn.Module:
    """The torch model of ``config`` on the default CPU SSD (what ``bsmamba2 separate`` runs)."""
    from bsmamba2.api import DEFAULT_MODEL
    from bsmamba2.checkpoints import load_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    if config == "bundled":
        return load_model(DEFAULT_MODEL, device="cpu").eval()
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny() if SMOKE else ModelConfig.paper(), device="cpu").eval()


def song(seconds: float) -> torch.Tensor:
    """The benchmark's input: seeded noise, stereo (2, seconds · SR)."""
    return 0.1 * torch.randn(2, int(seconds * SR), generator=torch.Generator().manual_seed(0))


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One row in this process: build the engine, warm it up, time one pass, save the stems (.npy)."""
    from bsmamba2.apply import apply_model
    from bsmamba2.device import tune_cpu_allocator
    from bsmamba2.onnx.runtime import OnnxModel

    tune_cpu_allocator()  # as `bsmamba2 separate` does
    torch.set_num_threads(job["threads"])
    if job["engine"] == "onnxruntime":
        model: nn.Module = OnnxModel(job["onnx"], threads=job["threads"])
    else:
        model = torch_model(job["config"])
    dtype = torch.bfloat16 if job["precision"] == "bf16" else None
    mix, seg = song(job["seconds"]), int(job["chunk"] * SR)
    loaded = peak_rss_mb()
    with torch.inference_mode():
        apply_model(model, mix[:, : seg // 4], segment=seg // 4, overlap=0.0, batch_size=1, dtype=dtype)
        t = time.perf_counter()
        out = apply_model(model, mix, segment=seg, overlap=0.0, batch_size=1, dtype=dtype)
        sec = time.perf_counter() - t
    np.save(job["stems"], out.numpy())
    return dict(seconds=sec, rss_loaded_mb=loaded, peak_rss_mb=peak_rss_mb())


def export_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Export ``job["config"]`` to ``job["onnx"]`` (and, if asked, its int8 twin) in this process."""
    from bsmamba2.onnx.exporter import export_onnx
    from bsmamba2.onnx.quantize import quantize_int8

    t, path = time.perf_counter(), Path(job["onnx"])
    res: dict[str, Any] = {}
    if job["reuse"] and path.exists():  # --keep folder of an earlier run: its export is reused
        res["note"] = "reused"
    else:
        export_onnx(torch_model(job["config"]), path, source=job["config"])
        res["export_s"] = time.perf_counter() - t
    res["mb"] = path.stat().st_size / 1e6
    if job.get("int8") and not (job["reuse"] and Path(job["int8"]).exists()):
        q = quantize_int8(path, job["int8"])
        res["int8_mb"] = q.stat().st_size / 1e6
    return res


def spawn(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter; its result, or {"error": ...} if it failed or was killed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        return {"error": f"over the time budget ({timeout:.0f} s)"}
    if proc.returncode != 0:
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"{why}: {tail[0][:200]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def usdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """uSDR of ``est`` against ``ref`` (bsmamba2.evaluate.metrics.usdr) over all stems and channels."""
    from bsmamba2.evaluate.metrics import usdr

    return usdr(ref, est)


def rows_for(config: str, vnni: bool, bf16: bool) -> list[tuple[str, str]]:
    """(engine, precision) rows of one config; torch fp32 first (the reference of the others)."""
    rows = [("torch", "fp32")] + ([("torch", "bf16")] if bf16 else []) + [("onnxruntime", "fp32")]
    return rows + ([("onnxruntime", "int8")] if vnni else [])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None, help="audio length (default 16 s, --quick 8 s)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines (default 2)")
    ap.add_argument("--chunk", type=float, default=None, help=f"chunk in seconds (default {CHUNK_S:g})")
    ap.add_argument("--quick", action="store_true", help="the bundled model alone, 8 s of audio")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 3600)))
    ap.add_argument("--only", default="", help="run only the configs whose name contains this text")
    ap.add_argument("--keep", type=Path, default=None, help="keep the .onnx files and stems in this folder")
    ap.add_argument("--reuse", action="store_true", help="reuse the .onnx files already in --keep")
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: one row, as JSON
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.job is not None:  # a row's own process
        job = json.loads(args.job)
        print(json.dumps(export_worker(job) if job["kind"] == "export" else worker(job)), flush=True)
        return 0
    import onnxruntime

    seconds = 1.0 if SMOKE else args.seconds or (8.0 if args.quick else 16.0)
    rep = Report("onnx")
    rep.extra.update(onnxruntime=onnxruntime.__version__, load_before=os.getloadavg())
    dl = Deadline(args.budget)
    flags = cpu_flags()
    bf16 = bool({"amx_bf16", "avx512_bf16"} & flags)
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    rep.extra["cpu_flags"] = sorted(
        {"amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_int8"} & flags
    )
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    folder.mkdir(parents=True, exist_ok=True)
    chunks: dict[str, float] = {}
    for config, label in CONFIGS.items():
        if args.only not in label or not dl.ok(30):
            continue
        if args.quick and config != "bundled":
            continue
        chunk = 0.5 if SMOKE else args.chunk or CHUNK_S
        chunks[label] = chunk
        onnx_file, int8_file = folder / f"{config}.onnx", folder / f"{config}.int8.onnx"
        exp = spawn(
            dict(
                kind="export",
                config=config,
                onnx=str(onnx_file),
                int8=vnni and str(int8_file),
                reuse=args.reuse,
            ),
            dl.left(),
        )
        rep.add("export", dict(model=label, **exp))
        ref: np.ndarray | None = None
        for engine, precision in rows_for(config, vnni, bf16):
            if engine == "onnxruntime" and "error" in exp:
                continue
            stems = folder / f"{config}.{engine}.{precision}.npy"
            job = dict(
                kind="run", config=config, engine=engine, precision=precision, threads=args.threads,
                seconds=seconds, chunk=chunk, stems=str(stems),
                onnx=str(int8_file if precision == "int8" else onnx_file),
            )  # fmt: skip
            res = spawn(job, dl.left())
            row: dict[str, Any] = dict(model=label, engine=engine, precision=precision, chunk_s=chunk)
            if "error" in res:
                rep.add("onnx", dict(row, note=res["error"]))
                continue
            out = np.load(stems)
            if ref is None and (engine, precision) == ("torch", "fp32"):
                ref = out
            rep.add(
                "onnx",
                dict(
                    row,
                    s_per_audio_s=res["seconds"] / seconds,
                    peak_rss_mb=res["peak_rss_mb"],
                    rss_loaded_mb=res["rss_loaded_mb"],
                    usdr_vs_torch_fp32_db=None if out is ref or ref is None else usdr_db(ref, out),
                ),
            )
    after = os.getloadavg()
    before = rep.extra["load_before"]
    rep.extra["load_after"] = after
    rep.notes.append(
        f"{seconds:g} s of audio in chunks of {', '.join(f'{v:g} s ({k.split()[0]})' for k, v in chunks.items())}, "
        f"no overlap, batch 1, {args.threads} threads for both engines; onnxruntime {onnxruntime.__version__}; "
        f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable). Load average (1/5/15 min) before: "
        f"{before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, after: {after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f}. "
        "Peak RSS: of the row's own process (weights, libraries and the pass); uSDR: the stems against "
        "torch fp32's."
    )
    if not bf16:
        rep.notes.append("No AMX / AVX512-BF16 on this CPU: torch bf16 autocast is skipped.")
    if not vnni:
        rep.notes.append("No VNNI on this CPU: ONNX Runtime int8 is skipped.")
    columns = ["model", "engine", "precision", "chunk_s", "s_per_audio_s", "peak_rss_mb", "rss_loaded_mb"]
    rep.table(
        "onnx", [*columns, "usdr_vs_torch_fp32_db", "note"], "CPU inference: s per s of audio, peak RSS"
    )
    rep.table(
        "export", ["model", "export_s", "mb", "int8_mb", "note", "error"], "Export (with its self-check)"
    )
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
