"""Shared helpers for the benchmark scripts: environment header, timing, peaks, result files, mamba-ssm loader.

Every script writes one JSON file (``$OUT/stages/<name>.json``: rows, Markdown tables, errors) and prints its
tables. ``OUT`` defaults to ./bench_out. The tables carry the device, date, versions and the exact command, so
they can be pasted into BENCHMARKS.md as they are.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# BENCH_SMOKE=1: run every script on the CPU with tiny sizes (Triton kernels in the interpreter), to check the
# scripts themselves without a GPU. Numbers from a smoke run mean nothing.
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEV = torch.device("cpu" if SMOKE else "cuda")


def have_device() -> bool:
    return SMOKE or torch.cuda.is_available()


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def empty_cache() -> None:
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak() -> None:
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def allocated_gib() -> float:
    return torch.cuda.memory_allocated() / 2**30 if DEV.type == "cuda" else 0.0


def max_allocated_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEV.type == "cuda" else 0.0


# ---- where results go -----------------------------------------------------------------------------------------
def out_dir() -> Path:
    d = Path(os.environ.get("OUT") or "bench_out")
    d.mkdir(parents=True, exist_ok=True)
    return d


def stages_dir() -> Path:
    """Where each script writes its own JSON (``$BENCH_STAGES``, else ``$OUT/stages``); the suite keeps them
    outside ``$OUT`` and merges them into ``$OUT/results.json`` and ``$OUT/SUMMARY.md`` after every stage."""
    d = Path(os.environ.get("BENCH_STAGES") or out_dir() / "stages")
    d.mkdir(parents=True, exist_ok=True)
    return d


def command_line() -> str:
    """The exact command that produced a result (what to type to rerun it)."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def _git_commit() -> str:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
        return r.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def env_info() -> dict[str, Any]:
    """Device, software versions and date, for the header of every table."""
    from bsmamba2.hostinfo import cpu_name  # torch-free; bsmamba2 itself only once a script has set it up

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "commit": _git_commit(),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            device=p.name,
            capability=f"{p.major}.{p.minor}",
            sm_count=p.multi_processor_count,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
        )
    else:
        info["device"] = "cpu"
    return info


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def header_md(info: dict[str, Any], command: str) -> str:
    dev = info.get("device", "?")
    if dev != "cpu":
        dev += f" (sm {info.get('capability')}, {info.get('sm_count')} SMs, {info.get('gpu_memory_gib')} GiB)"
    return (
        f"Device: {dev}; CPU: {info.get('cpu')} ({info.get('cpu_threads')} threads)  \n"
        f"Date: {info['date_utc']}; torch {info['torch']} (CUDA {info.get('cuda_runtime')}), "
        f"triton {info.get('triton')}, python {info['python']}, commit {info.get('commit')}  \n"
        f"Command: `{command}`"
    )


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """A Markdown table of ``rows`` (dicts) restricted to ``columns``; floats get 3-4 significant digits."""

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
                return f"{v:.2e}"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


class Report:
    """Collects rows, tables and errors of one benchmark script and writes ``$OUT/stages/<name>.json``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.info = env_info()
        self.command = command_line()
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.tables: list[str] = []
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.t0 = time.time()
        self.save()

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(section, []).append(row)
        print(f"[{self.name}] {section}: {json.dumps(row, default=str)}", flush=True)
        self.save()

    def table(self, section: str, columns: Sequence[str], title: str) -> None:
        if self.rows.get(section):
            t = md_table(self.rows[section], columns, title)
            self.tables.append(t)
            self.save()

    def error(self, where: str, exc: BaseException) -> None:
        msg = f"{where}: {type(exc).__name__}: {exc}"
        self.errors.append(msg)
        print(f"[{self.name}] ERROR {msg}\n{traceback.format_exc()}", flush=True)
        self.save()

    def markdown(self) -> str:
        parts = [f"### {self.name}", "", header_md(self.info, self.command), ""]
        for t in self.tables:
            parts += [t, ""]
        for n in self.notes:
            parts += [n, ""]
        if self.errors:
            parts += ["Errors:", ""] + [f"- {e}" for e in self.errors] + [""]
        return "\n".join(parts)

    def save(self) -> None:
        data = {
            "name": self.name,
            "info": self.info,
            "command": self.command,
            "rows": self.rows,
            "tables": self.tables,
            "notes": self.notes,
            "errors": self.errors,
            "extra": self.extra,
            "seconds": round(time.time() - self.t0, 1),
            "markdown": self.markdown(),
        }
        path = stages_dir() / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)

    def finish(self) -> None:
        self.save()
        print(self.markdown(), flush=True)


class Deadline:
    """A soft time budget for one script: parts check ``left()`` and skip themselves when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()

    def ok(self, need: float = 0.0) -> bool:
        return self.left() > need


def attempt(report: Report, where: str, fn: Callable[[], Any]) -> Any:
    """Run one part; record (not raise) its failure so the rest of the script still runs."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as e:
        report.error(where, RuntimeError(f"CUDA out of memory ({str(e).splitlines()[0][:160]})"))
    except Exception as e:
        report.error(where, e)
    finally:
        empty_cache()
    return None


# ---- timing ---------------------------------------------------------------------------------------------------
def cuda_time_ms(fn: Callable[[], Any], warmup_ms: float = 25.0, rep_ms: float = 100.0) -> float:
    """Median time of ``fn`` in ms (device events; ``triton.testing.do_bench`` when Triton is there)."""
    if DEV.type == "cpu":
        return 1e3 * cpu_time_s(fn, warmup=1, reps=2)
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    except ImportError:
        pass
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    est = max(start.elapsed_time(end), 1e-3)
    n_warm, n_rep = max(1, int(warmup_ms / est)), max(3, int(rep_ms / est))
    for _ in range(n_warm):
        fn()
    times = []
    for _ in range(n_rep):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def cuda_time_steps(fn: Callable[[], Any], warmup: int, reps: int) -> tuple[float, float]:
    """Run ``fn`` ``warmup`` times, then time ``reps`` runs one by one; returns (median ms, spread max-min ms)."""
    if DEV.type == "cpu":
        ts = sorted(1e3 * cpu_time_s(fn, warmup=0, reps=1) for _ in range(max(1, min(reps, 2))))
        return ts[len(ts) // 2], ts[-1] - ts[0]
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2], times[-1] - times[0]


def cpu_time_s(fn: Callable[[], Any], warmup: int = 1, reps: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def peak_memory_gib(fn: Callable[[], Any]) -> tuple[float, float]:
    """(peak allocated GiB during ``fn``, peak above what was allocated before)."""
    if DEV.type == "cpu":
        fn()
        return 0.0, 0.0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak / 2**30, (peak - base) / 2**30


# ---- the device's two ceilings (METHOD.md: measure them in the same run) ---------------------------------------
def measure_peaks() -> dict[str, float]:
    """bf16 matrix-product rate (8192³, random data) and device-to-device copy bandwidth (read + write).

    Cached in ``$OUT/stages/peaks.json`` so every script of one suite run uses the same numbers.
    """
    path = stages_dir() / "peaks.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    n = 256 if SMOKE else 8192
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    ms = cuda_time_ms(lambda a=a, b=b: a @ b, warmup_ms=100, rep_ms=300)
    tflops = 2 * n**3 / ms / 1e9
    del a, b
    src = torch.randn(2**16 if SMOKE else 256 * 2**20, device=DEV)  # 1 GiB of float32
    dst = torch.empty_like(src)
    ms_copy = cuda_time_ms(lambda d=dst, s=src: d.copy_(s), warmup_ms=50, rep_ms=200)
    gbps = 2 * src.numel() * 4 / ms_copy / 1e6
    del src, dst
    empty_cache()
    peaks = {"bf16_matmul_tflops": round(tflops, 3), "copy_gbps": round(gbps, 3)}
    path.write_text(json.dumps(peaks))
    return peaks


def apply_best_ssd_configs(report: Report) -> None:
    """Use the SSD launch configurations that ``bench_ssd.py``'s sweep found fastest in this run, if any."""
    path = stages_dir() / "ssd.json"
    try:
        best = json.loads(path.read_text()).get("extra", {}).get("best_configs", {})
    except (OSError, ValueError):
        best = {}
    if not best:
        report.notes.append(
            "SSD kernel launch configurations: chosen by the autotuner (no sweep result found)."
        )
        return
    from bsmamba2.model.mixers import ssd_triton as st

    for kind, (w, s, r, chunk) in best.items():
        st.force_config(kind, w, s, r, chunk=chunk)
    report.notes.append(f"SSD kernel launch configurations from this run's sweep (bench_ssd.py): {best}.")


# ---- mamba-ssm's Triton SSD, imported without its compiled extension -----------------------------------------------
def find_mamba_root() -> Path | None:
    """The directory holding ``mamba_ssm/`` (``$MAMBA_SITE`` first, then sys.path)."""
    candidates: Iterable[str] = [os.environ.get("MAMBA_SITE", ""), *sys.path]
    for c in candidates:
        if c and (Path(c) / "mamba_ssm" / "ops" / "triton" / "ssd_combined.py").is_file():
            return Path(c)
    return None


def load_mamba_ssd() -> tuple[Callable[..., Any], str, list[types.ModuleType]]:
    """``mamba_chunk_scan_combined`` from mamba-ssm's Triton files, its version, and its kernel modules.

    ``import mamba_ssm`` would run ``mamba_ssm/__init__.py``, which loads the CUDA extension
    (selective_scan_cuda) that a pure wheel does not have. Stub parent packages that only carry ``__path__``
    let Python find the Triton submodules without running any ``__init__``.
    """
    root = find_mamba_root()
    if SMOKE:  # mamba-ssm wraps its launches in torch.cuda.device(...); let them run on the CPU interpreter
        import contextlib

        torch.cuda.device = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment,misc]
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(multi_processor_count=4)  # type: ignore[assignment]
    if root is None:
        raise ImportError("mamba_ssm not found (set MAMBA_SITE or install the wheel from scripts/)")
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton"):
        mod = sys.modules.get(name)
        if mod is None or not hasattr(mod, "__path__"):
            stub = types.ModuleType(name)
            stub.__path__ = [str(root.joinpath(*name.split(".")))]
            sys.modules[name] = stub
    combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    mods = [
        importlib.import_module(f"mamba_ssm.ops.triton.{m}")
        for m in ("ssd_combined", "ssd_bmm", "ssd_chunk_scan", "ssd_chunk_state", "ssd_state_passing")
    ]
    init = (root / "mamba_ssm" / "__init__.py").read_text()
    m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", init)
    return combined.mamba_chunk_scan_combined, (m.group(1) if m else "unknown"), mods


def mamba_autotuners(mods: Sequence[types.ModuleType]) -> list[Any]:
    """Every Triton Autotuner object defined in ``mods``."""
    from triton.runtime.autotuner import Autotuner

    seen: dict[int, Any] = {}
    for mod in mods:
        for v in vars(mod).values():
            if isinstance(v, Autotuner):
                seen[id(v)] = v
    return list(seen.values())


# ---- the suite's summary ------------------------------------------------------------------------------------------
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def summarize(out: Path, stages_path: Path) -> str:
    """Merge ``stages_path/*.json`` into ``out/results.json`` and ``out/SUMMARY.md``; return a short summary."""
    stages = {}
    for p in sorted(stages_path.glob("*.json")):
        try:
            stages[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    status = (stages_path / "status.txt").read_text() if (stages_path / "status.txt").exists() else ""
    (out / "results.json").write_text(json.dumps({"status": status, "stages": stages}, indent=1, default=str))
    md = [
        "# bsmamba2 GPU suite",
        "",
        "Stage status (name, exit code, seconds):",
        "",
        "```",
        status.strip(),
        "```",
        "",
    ]
    for name in ("triage", "ssd", "train", "infer", "cpu", "ssd_compiled"):
        if name in stages:
            md += [stages[name].get("markdown", ""), ""]
    (out / "SUMMARY.md").write_text("\n".join(md))

    lines = []
    info = next((s["info"] for s in stages.values() if "info" in s), {})
    lines.append(
        f"device {info.get('device')} | torch {info.get('torch')} | triton {info.get('triton')} | "
        f"{info.get('date_utc')}"
    )
    lines.append("stages: " + "; ".join(s.strip() for s in status.strip().splitlines()))
    tri = stages.get("triage", {})
    if tri.get("rows", {}).get("triage"):
        counts: dict[str, int] = {}
        for r in tri["rows"]["triage"]:
            key = f"{r['status']}{'+' + r['workaround'] if r.get('workaround') else ''}"
            counts[key] = counts.get(key, 0) + 1
        bad = [
            f"{r['dims']}/{r['kind']}{r['cfg']}c{r['chunk']}{'+' + r['workaround'] if r.get('workaround') else ''}:"
            f" {r['status']}"
            for r in tri["rows"]["triage"]
            if r["status"] != "pass"
        ]
        lines.append(f"triage: {counts}; not passing: {bad[:12]}")
        safe = tri.get("extra", {}).get("safe", {})
        lines.append(
            f"  used later: configs {safe.get('configs')} chunks {safe.get('chunks')} workaround '{safe.get('workaround')}'"
        )
    ssd = stages.get("ssd", {}).get("rows", {})
    if ssd.get("speed"):
        lines.append("SSD fwd+bwd ms (fwd ms) [extra GiB]:")
        for r in ssd["speed"]:
            lines.append(
                f"  {r['shape']:<15} {r['method']:<24} {_fmt(r.get('fwdbwd_ms'))} ({_fmt(r.get('fwd_ms'))}) "
                f"[{_fmt(r.get('extra_mem_gib'))}]  {_fmt(r.get('tflops'))} TFLOP/s {_fmt(r.get('gbps'))} GB/s"
            )
    for r in ssd.get("speedup", []):
        if r["baseline"].startswith("mamba"):
            lines.append(f"  speed-up {r['shape']}: {r['ours']} vs {r['baseline']}: {_fmt(r['speedup'])}x")
    for r in ssd.get("accuracy", []):
        errs = {k: v for k, v in r.items() if k.startswith("d") or k == "y"}
        worst = max(errs, key=lambda k: errs[k]) if errs else None
        lines.append(
            f"  accuracy {r['shape']} {r['method']}: worst {worst} {_fmt(errs.get(worst))}" if worst else ""
        )
    if "peaks" in stages.get("ssd", {}).get("extra", {}):
        lines.append(f"  peaks: {stages['ssd']['extra']['peaks']}")
    for r in stages.get("train", {}).get("rows", {}).get("train", []):
        lines.append(
            f"train {r['model']:<34} step {_fmt(r.get('step_ms'))} ms  peak {_fmt(r.get('peak_mem_gib'))} GiB "
            f"{r.get('status', '')}"
        )
    for r in stages.get("infer", {}).get("rows", {}).get("song", []):
        lines.append(f"infer song {r['model']:<20} chunk {r['chunk_s']}s: {_fmt(r['x_realtime'])}x realtime")
    for r in stages.get("infer", {}).get("rows", {}).get("scaling", []):
        lines.append(
            f"infer scaling {r['model']:<20} {r['seconds']}s: {_fmt(r.get('fwd_ms'))} ms "
            f"{_fmt(r.get('peak_mem_gib'))} GiB {r.get('status', '')}"
        )
    for r in stages.get("infer", {}).get("rows", {}).get("graphs", []):
        lines.append(
            f"infer graphs {r['model']}: eager {_fmt(r['eager_ms'])} ms, graph {_fmt(r['graph_ms'])} ms"
        )
    for r in stages.get("cpu", {}).get("rows", {}).get("cpu", []):
        lines.append(
            f"cpu {r['model']} {r['precision']}: {_fmt(r['x_realtime'])}x realtime ({r['threads']} threads)"
        )
    for r in stages.get("ssd_compiled", {}).get("rows", {}).get("speed", []):
        lines.append(
            f"compiled {r['shape']}: fwd+bwd {_fmt(r.get('fwdbwd_ms'))} ms (first call {r.get('first_call_s')} s)"
        )
    for name, s in stages.items():
        for e in s.get("errors", []):
            lines.append(f"ERROR [{name}] {e[:200]}")
    return "\n".join(line for line in lines if line)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--summary":
        text = summarize(out_dir(), stages_dir())
        if sys.argv[2:] != ["--quiet"]:
            print(text)
