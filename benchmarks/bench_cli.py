"""``bsmamba2 separate`` as a user runs it, the whole GPU table in one run (issue 12).

Sections, in this order (each is written to ``--out`` as soon as it is done, so a run cut short keeps them):

1. Per-process costs, in fresh interpreters: ``python -c pass``, ``import torch``, CUDA start-up,
   ``import bsmamba2.cli``, ``bsmamba2 --help`` and ``bsmamba2 separate --help``. Bytecode is first written
   the way a pip install does (``compileall`` of the packages the CLI imports, timed, and one first
   ``separate`` process), into a private ``PYTHONPYCACHEPREFIX``: the GPU scripts export
   PYTHONDONTWRITEBYTECODE, and without bytecode every process re-compiles ~1,000 modules (~3 s).
2. ``bsmamba2 separate`` on one ``--seconds`` song and on a folder of ``--songs`` songs (16-bit stereo WAV
   at 44.1 kHz in, 24-bit WAV out), per setting: *cold* = empty Triton / inductor caches (the first run on a
   machine), *warm* = the caches that run filled; wall time from process start to files written, the
   per-stage seconds the CLI reports (``--timings``: load, decode, model, to host = waiting for the GPU's
   pieces, encode, write; start-up = wall − run)
   and the peak GPU memory. The first row is the CLI's defaults as they are; the others name their flags.
3. The models alone through the package's chunk engine (``apply_model``) on a tensor already on the device:
   BSMamba2 eager at several batch sizes and with the compiled glue (checked against eager at the same batch
   size), the BS-RoFormer baseline (74.5M) and htdemucs (pip ``demucs``, random weights: the arithmetic is
   the trained model's), all at the CLI's chunking and precision.

    python benchmarks/bench_cli.py [--songs 10] [--seconds 240] [--out DIR] [--budget 240] [--paper]
    python benchmarks/bench_cli.py --quick      # CPU smoke test of the script itself (numbers mean nothing)

Writes ``DIR/cli.json`` and ``DIR/cli.md`` (DIR: ``--out``, else ``$OUT``, else ./bench_out). ``--budget``:
seconds after which the remaining optional rows are skipped (marked so), to stay within ~5 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
# (label, flags) of the CLI rows after the defaults, most telling first; rows equal to the defaults are dropped.
NO_IO_THREADS = {"BSMAMBA2_IO_THREADS": "0"}  # decode and encode on the model's thread, as before issue 12
# the defaults without the CUDA warm-up thread and one file at a time (session 5's defaults); and one file at
# a time alone (the default on CUDA is two files in flight)
NO_OVERLAPS = {"BSMAMBA2_CUDA_WARM_UP": "0", "BSMAMBA2_FILES_IN_FLIGHT": "1"}
ONE_AT_A_TIME = {"BSMAMBA2_FILES_IN_FLIGHT": "1"}
FUSED_ROW = "compiled glue (AOTInductor), batch 8"
GPU_VARIANTS: list[tuple[str, list[str], dict[str, str]]] = [
    # the garbage collector running through the start-up and the interpreter's full teardown (session 10's
    # bsmamba2.cli.startup: before / after)
    ("defaults, fast start and exit off", [], {"BSMAMBA2_FAST_START": "0"}),
    # no pinned host blocks left in torch's cache by the warm-up (cli/warmup.py's "pinned" phase, session 10)
    ("defaults, no pinned blocks", [], {"BSMAMBA2_PINNED_BLOCKS": "0"}),
    # the eager glue's norms as plain PyTorch ops, not the fused Triton kernels (session 9)
    ("defaults, Triton norms off", [], {"BSMAMBA2_TRITON_NORM": "0"}),
    ("defaults, no warm-up, one file at a time", [], NO_OVERLAPS),
    ("defaults, one file at a time", [], ONE_AT_A_TIME),
    # --fused through AOTInductor packages of the glue, kept in the user cache (opt-in until a GPU run times it;
    # cold: compiled once)
    (FUSED_ROW, ["--fused", "--batch-size", "8"], {"BSMAMBA2_GLUE_AOT": "1"}),
    # the same through torch.compile (the default --fused), warm in the caches of the row above
    ("compiled glue, batch 8, torch.compile", ["--fused", "--batch-size", "8"], {"BSMAMBA2_GLUE_AOT": "0"}),
    # the warm-up with its stand-in forward (the default leaves it out: context, cuBLAS and cuFFT only)
    ("defaults, warm-up with the stand-in forward", [], {"BSMAMBA2_CUDA_WARM_UP": "1"}),
    ("compiled glue, batch 16", ["--fused", "--batch-size", "16"], {}),
    ("eager, batch 16", ["--no-fused", "--batch-size", "16"], {}),
    # warm only, in the caches of "eager, batch 16" (a row whose env sets BSMAMBA2_IO_THREADS reuses them)
    ("eager, batch 16, no I/O threads", ["--no-fused", "--batch-size", "16"], NO_IO_THREADS),
    ("eager, batch 4", ["--no-fused", "--batch-size", "4"], {}),
    ("eager, batch 8", ["--no-fused", "--batch-size", "8"], {}),
    ("compiled glue, batch 4", ["--fused", "--batch-size", "4"], {}),
    # worker threads' large allocations through glibc's main arena, as the model thread's (session 6)
    ("defaults, MALLOC_ARENA_MAX=1", [], {"MALLOC_ARENA_MAX": "1"}),
]
QUICK_VARIANTS = [
    ("defaults, two files in flight", [], {"BSMAMBA2_FILES_IN_FLIGHT": "2"}),  # on the CPU, 1 is the default
    ("eager, batch 2", ["--no-fused", "--batch-size", "2"], {}),
    ("eager, batch 2, no I/O threads", ["--no-fused", "--batch-size", "2"], NO_IO_THREADS),
]
CHILD_TIMEOUT_S = 240  # one stuck process becomes a failed row, not a lost run
N_CORE_VARIANTS = 4  # run before the model-only section; the rest only while the budget lasts


class Bench:
    """The run's state: settings, scratch folder, the report so far and the clock against the budget."""

    def __init__(self, args: argparse.Namespace, work: Path, out: Path) -> None:
        self.args, self.work, self.out = args, work, out
        self.t0 = time.perf_counter()
        self.result: dict[str, Any] = {"header": {}, "fixed": {}, "cli": [], "model": [], "skipped": []}
        # --quick: a tiny random model (saved in main) and short chunks, so the smoke test takes seconds
        self.model_file: Path | None = work / "tiny.safetensors" if args.quick else None
        quick = ["--device", "cpu", "--segment", "0.25", "--precision", "fp32"]
        self.cli_extra = quick if args.quick else ["--device", args.device]
        if self.model_file is not None:
            self.cli_extra += ["--model", str(self.model_file)]
        self.model_settings: dict[str, Any] = {}  # the model section's device, dtype, chunking and mix
        self.model_outputs: dict[int, Any] = {}  # batch size -> the eager output, the reference at that size

    @property
    def model_name(self) -> str:
        return "bundled (6.8M)" if self.model_file is None else "tiny (random weights)"

    def over_budget(self, what: str) -> bool:
        if time.perf_counter() - self.t0 < self.args.budget:
            return False
        self.result["skipped"].append(what)
        return True

    def env(self, cache: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A child's environment: this tree first on the path, bytecode kept (in a private prefix), with
        ``cache``, Triton / inductor caches of its own, and ``extra`` on top."""
        env = {**os.environ, **(extra or {})}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.work / "pyc")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
        if self.args.quick:  # tiny tensors on a shared CPU: one intra-op thread (two fight, see conftest.py)
            env["OMP_NUM_THREADS"] = "1"
        if cache is not None:
            env.update(
                TRITON_CACHE_DIR=str(cache / "triton"),
                TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
                XDG_CACHE_HOME=str(cache / "xdg"),
            )
        return env

    def save(self) -> None:
        (self.out / "cli.json").write_text(json.dumps(self.result, indent=1, default=str))
        (self.out / "cli.md").write_text(report_md(self.result))


# ---- helpers -------------------------------------------------------------------------------------------------


def make_song(path: Path, seconds: float, seed: int) -> None:
    """A stereo 16-bit WAV: a chord, a gated melody and noise (content does not change the arithmetic)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR), dtype=np.float64) / SR
    x = 0.15 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 165 * t)
    x = x + 0.1 * (np.sin(2 * np.pi * 0.5 * t) > 0) * np.sin(2 * np.pi * (440 + 20 * np.sin(t)) * t)
    stereo = np.stack([x, np.roll(x, 37)]) + 0.02 * rng.standard_normal((2, t.size))
    sf.write(str(path), stereo.T.astype(np.float32), SR, subtype="PCM_16")


def tiny_model(path: Path) -> None:
    """``ModelConfig.tiny()`` with random weights, for --quick."""
    import torch

    from bsmamba2.checkpoints import save_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    torch.manual_seed(0)
    save_model(build_model(ModelConfig.tiny(hop_length=128)), path)


def wall(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from process start to exit; raises with the end of stderr if it failed."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({r.returncode}): {r.stderr.strip()[-600:]}")
    return dt


def separate(
    b: Bench, inputs: list[Path], flags: list[str], cache: Path, tag: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """One ``bsmamba2 separate`` process: its wall time plus the stage seconds it reported."""
    timings = b.work / f"timings_{tag}.json"
    cmd = [sys.executable, "-m", "bsmamba2", "-q", "separate", *map(str, inputs)]
    cmd += ["-o", str(b.work / f"out_{tag}"), "--overwrite", "--timings", str(timings), *b.cli_extra, *flags]
    dt = wall(cmd, b.env(cache, extra))
    shutil.rmtree(b.work / f"out_{tag}", ignore_errors=True)  # ten 4-minute songs write 1.3 GB
    stages = json.loads(timings.read_text())
    stages["start-up (s)"] = round(dt - stages.get("run (s)", 0.0), 3)
    return {"wall (s)": dt, **stages}


def run_row(b: Bench, name: str, fn: Callable[[], dict[str, Any]], into: str) -> None:
    """Add fn()'s row to section ``into``; a failure becomes a row with a note, not a crash."""
    try:
        row = {"name": name, **fn()}
    except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
        row = {"name": name, "note": f"{type(e).__name__}: {str(e)[-300:]}"}
    b.result[into].append(row)
    b.save()
    print(json.dumps(row, default=str), flush=True)


# ---- 1. per-process costs ------------------------------------------------------------------------------------


def compile_bytecode(b: Bench) -> float:
    """Write bytecode for torch, triton and the other packages the CLI imports, as pip does at install."""
    import importlib.util

    dirs = [str(ROOT / "bsmamba2")]
    for name in ("torch", "triton", "sympy", "numpy", "soundfile", "soxr", "safetensors", "einops", "tqdm"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += list(spec.submodule_search_locations)
        elif spec is not None and spec.origin:
            dirs.append(spec.origin)
    cmd = [sys.executable, "-m", "compileall", "-q", "-j", "0", *dirs]
    t = time.perf_counter()
    subprocess.run(cmd, env=b.env(None), capture_output=True)  # some test files in wheels do not compile
    return time.perf_counter() - t


def fixed_costs(b: Bench, song: Path) -> None:
    py = sys.executable
    probes: dict[str, Callable[[], float]] = {}
    if not b.args.quick:
        probes["compileall of the imported packages, once (s)"] = lambda: compile_bytecode(b)
    first = b.work / "cache_first"
    probes["first separate process, 1 s song, compiling now (s)"] = lambda: separate(
        b, [song], [], first, "first"
    )["wall (s)"]
    commands = {
        "python -c pass (s)": [py, "-c", "pass"],
        "import torch (s)": [py, "-c", "import torch"],
        "import bsmamba2.cli (s)": [py, "-c", "import bsmamba2.cli"],
        "bsmamba2 --help (s)": [py, "-m", "bsmamba2", "--help"],
        "bsmamba2 separate --help (s)": [py, "-m", "bsmamba2", "separate", "--help"],
    }
    if not b.args.quick:
        commands["import torch + CUDA start-up (s)"] = [
            py,
            "-c",
            "import torch; torch.zeros(1, device='cuda')",
        ]
        # the same with the driver and the primary context started on a thread beside the import, as
        # `separate` does (bsmamba2/cli/cuda_prestart.py)
        commands["import torch + CUDA start-up, driver started beside the import (s)"] = [
            py,
            "-c",
            "from bsmamba2.cli import cuda_prestart as p; p.start('cuda'); import torch; "
            "torch.zeros(1, device='cuda')",
        ]
    reps = 1 if b.args.quick else 2
    for name, cmd in commands.items():
        probes[name] = lambda cmd=cmd: min(wall(cmd, b.env(None)) for _ in range(reps))
    for name, probe in probes.items():
        try:
            b.result["fixed"][name] = probe()
        except Exception as e:  # noqa: BLE001 - reported, and the other sections still run
            b.result["fixed"][name] = f"failed: {str(e)[-300:]}"
        b.save()


# ---- 2. the CLI ---------------------------------------------------------------------------------------------


def cli_row(
    b: Bench, label: str, flags: list[str], extra: dict[str, str], songs: list[Path]
) -> dict[str, Any]:
    """Cold and warm single-song runs and a warm folder run of one setting (``extra``: its environment).
    A setting that differs from an earlier row by its environment only reuses that row's warm caches and
    has no cold run."""
    tag = label.replace(" ", "_").replace(",", "")
    same = [r for r in b.result["cli"] if extra and r.get("flags") == " ".join(flags) and "cache" in r]
    if same:
        cache = Path(same[0]["cache"])
        cold = separate(b, songs[:1], flags, cache, f"{tag}_first", extra)  # bytecode of this path, etc.
    else:
        cache = Path(tempfile.mkdtemp(prefix="cache_", dir=b.work))
        cold = separate(b, songs[:1], flags, cache, f"{tag}_cold", extra)
    warms = [separate(b, songs[:1], flags, cache, f"{tag}_warm{i}", extra) for i in range(b.args.reps)]
    warm = sorted(warms, key=lambda r: r["wall (s)"])[len(warms) // 2]
    folder = separate(b, [songs[0].parent], flags, cache, f"{tag}_folder", extra)
    audio_one, audio_all = b.args.seconds, b.args.seconds * len(songs)
    row: dict[str, Any] = {
        "flags": " ".join([*(f"{k}={v}" for k, v in extra.items()), *flags]) or "(defaults)",
        "settings": {k: cold.get(k) for k in ("device", "batch_size", "fused", "files_in_flight")},
        "one song, cold (s)": "" if same else cold["wall (s)"],
        "first-call cost, cold - warm (s)": "" if same else cold["wall (s)"] - warm["wall (s)"],
        "one song, warm (s)": warm["wall (s)"],
        "one song, warm (x real time)": audio_one / warm["wall (s)"],
        f"{len(songs)} songs, one process (s)": folder["wall (s)"],
        f"{len(songs)} songs (x real time)": audio_all / folder["wall (s)"],
        "gpu peak (GiB)": folder.get("gpu peak (GiB)"),
        "stages": {"cold": cold, "warm": warm, "folder": folder},
        "cache": str(cache),  # warm: the model section's compiled-glue rows reuse it
    }
    return row


def cli_section(b: Bench, songs: list[Path], variants: list[tuple[str, list[str], dict[str, str]]]) -> None:
    for label, flags, extra in variants:
        if label != "defaults" and not extra and _same_as_defaults(b, flags):
            continue
        if label != "defaults" and b.over_budget(f"cli: {label}"):
            continue
        run_row(b, label, lambda f=flags, e=extra, lab=label: cli_row(b, lab, f, e, songs), "cli")


def _same_as_defaults(b: Bench, flags: list[str]) -> bool:
    """Whether ``flags`` only restate what the defaults row resolved to (then the row would repeat it)."""
    rows = [r for r in b.result["cli"] if r["name"] == "defaults" and "settings" in r]
    if not rows:
        return False
    s = rows[0]["settings"]
    fused = "--fused" in flags
    batch = int(flags[flags.index("--batch-size") + 1]) if "--batch-size" in flags else s["batch_size"]
    return bool(s["fused"]) == fused and s["batch_size"] == batch


# ---- 3. the models alone -----------------------------------------------------------------------------------


def htdemucs() -> Any:
    """htdemucs with its published architecture and random weights, mapping (B, 2, L) -> (B, 4, 2, L)."""
    import torch
    from demucs.htdemucs import HTDemucs

    from bsmamba2.config import ModelConfig

    net = HTDemucs(sources=["drums", "bass", "other", "vocals"], samplerate=SR, segment=8)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.cfg = ModelConfig.tiny(stems=("drums", "bass", "other", "vocals"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    return Wrapped()


def time_model(b: Bench, model: Any, batch: int, reference: Any = None) -> dict[str, Any]:
    """Seconds for the mix through ``apply_model`` at the CLI's chunking (best of 2 after a warm-up), peak GPU
    memory, and with ``reference`` the largest difference from that output."""
    import torch

    from bsmamba2.apply import apply_model

    s = b.model_settings
    dev = s["device"]

    def run() -> Any:
        y = apply_model(
            model, s["mix"], segment=s["segment"], overlap=s["overlap"], batch_size=batch, dtype=s["dtype"]
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return y

    y = run()  # compiles, tunes, allocates
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        y = run()
        times.append(time.perf_counter() - t)
    row: dict[str, Any] = {"batch": batch, "s": min(times), "x real time": b.args.seconds / min(times)}
    if dev.type == "cuda":
        row["gpu peak (GiB)"] = torch.cuda.max_memory_allocated(dev) / 2**30
    if reference is not None:
        row["max |diff| vs eager"] = float((y - reference).abs().max())
        row["relative diff vs eager"] = float((y - reference).norm() / reference.norm().clamp_min(1e-12))
    if reference is None:
        b.model_outputs.setdefault(batch, y)  # the first (eager) output at this batch size is the reference
    return row


def model_section(b: Bench) -> None:
    # the caches of the compiled-glue CLI row, when it ran: the same graphs, already compiled
    warm = [r["cache"] for r in b.result["cli"] if r["name"] == FUSED_ROW and "cache" in r]
    cache = Path(warm[0]) if warm else b.work / "cache_models"
    os.environ.update(
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
        TRITON_CACHE_DIR=str(cache / "triton"),
        XDG_CACHE_HOME=str(cache / "xdg"),  # the glue's AOT packages (glue_cache)
    )
    import torch

    from bsmamba2.api import Separator
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    device = "cpu" if b.args.quick else b.args.device
    if b.args.quick:
        torch.set_num_threads(1)
    seg_s, precision = (0.25, "fp32") if b.args.quick else (8.0, "auto")  # as the CLI rows run
    eager = Separator.from_pretrained(b.model_file, device=device, segment=seg_s, precision=precision)
    dev = eager.device
    mix = torch.randn(2, int(b.args.seconds * SR), generator=torch.Generator().manual_seed(0)) * 0.1
    b.model_settings = dict(
        device=dev, dtype=eager.dtype, segment=eager.segment_samples, overlap=eager.overlap, mix=mix.to(dev)
    )
    cuda = dev.type == "cuda"
    fused = (lambda: Separator.from_pretrained(None, device=dev, fused=True).model) if cuda else None
    # most telling first, the budget may cut the tail: the defaults' batch, the baselines, then the variants
    eager_row = lambda n: (f"BSMamba2 {b.model_name}, eager, batch {n}", lambda: eager.model, n, False)  # noqa: E731
    rows: list[tuple[str, Callable[[], Any], int, bool]] = [eager_row(n) for n in (4, 8)]
    compiled = cuda and not b.args.skip_compiled
    if compiled:
        rows.append((f"BSMamba2 {b.model_name}, compiled glue, batch 8", fused, 8, True))
    if b.args.quick:  # stand-ins of the baselines' code paths at a size a 2-core CPU runs in seconds
        roformer, rname = ModelConfig.tiny(mixer="roformer"), "BS-RoFormer, tiny config"
    else:
        roformer, rname = ModelConfig.roformer_paper(), "BS-RoFormer baseline (74.5M)"
    rows.append((f"{rname}, batch 4", lambda: build_model(roformer).to(dev).eval(), 4, False))
    if not b.args.quick:
        rows.append(("htdemucs (demucs 4.1, 26.9M), batch 4", lambda: htdemucs().to(dev).eval(), 4, False))
    if b.args.paper:
        paper = lambda: build_model(ModelConfig.paper(), device=dev).eval()  # noqa: E731
        rows.append(("BSMamba2 paper config (48.1M, random weights), batch 4", paper, 4, False))
    rows += [eager_row(n) for n in ((2,) if b.args.quick else (16, 32))]
    if compiled:
        rows += [
            (f"BSMamba2 {b.model_name}, compiled glue, batch 4", fused, 4, True),
        ]
    for name, make, batch, compare in rows:
        if b.over_budget(f"model: {name}"):
            continue

        def one(make: Any = make, batch: int = batch, compare: bool = compare) -> dict[str, Any]:
            model = make()
            return time_model(b, model, batch, b.model_outputs.get(batch) if compare else None)

        run_row(b, name, one, "model")


# ---- report ------------------------------------------------------------------------------------------------


def md_table(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols and c not in skip and not isinstance(r[c], dict)]

    def cell(v: Any) -> str:
        return (
            f"{v:.3g}"
            if isinstance(v, float) and abs(v) < 0.01
            else f"{v:.2f}"
            if isinstance(v, float)
            else str(v)
        )

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def stage_rows(cli: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-stage seconds of every CLI run (the stages overlap: decode and encode run beside the model)."""
    keys = ("wall (s)", "start-up (s)", "load (s)", "decode (s)", "model (s)", "to host (s)", "encode (s)")
    keys += ("write (s)", "warm-up wait (s)", "gpu peak (GiB)")
    rows = []
    for r in cli:
        for kind, st in r.get("stages", {}).items():
            rows.append({"setting": r["name"], "run": kind, **{k: st.get(k, "") for k in keys}})
    return rows


def report_md(res: dict[str, Any]) -> str:
    h = res["header"]
    parts = [
        "# bsmamba2 separate, end to end (issue 12)\n",
        f"{h.get('date')}, {h.get('device')}, torch {h.get('torch')}, triton {h.get('triton')}, Python "
        f"{h.get('python')}, {h.get('cpus')} CPU cores, load {h.get('load')}; `{h.get('command')}`; "
        f"{h.get('songs')} songs of {h.get('seconds')} s\n",
        "Per-process costs (fresh interpreters, bytecode present unless said):\n",
        "\n".join(
            f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in res["fixed"].items()
        )
        + "\n",
    ]
    if res["cli"]:
        parts += ["`bsmamba2 separate`, wall from process start (cold: empty compile caches):\n"]
        parts += [
            md_table(res["cli"], skip=("cache",)) + "\n",
            "Stages (seconds; decode / encode overlap the model):\n",
        ]
        parts += [md_table(stage_rows(res["cli"])) + "\n"]
    if res["model"]:
        parts += ["Models alone, the CLI's chunking and precision, the song as a tensor on the device:\n"]
        parts += [md_table(res["model"]) + "\n"]
    if res["skipped"]:
        parts.append("Skipped (budget): " + ", ".join(res["skipped"]) + "\n")
    return "\n".join(parts)


def header(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available() and not args.quick and args.device != "cpu"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU {platform.processor() or platform.machine()}",
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python benchmarks/bench_cli.py " + " ".join(sys.argv[1:]),
        "songs": args.songs,
        "seconds": args.seconds,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--songs", type=int, default=10, help="songs in the folder run (default 10)")
    p.add_argument("--seconds", type=float, default=240.0, help="length of each song (default 240)")
    p.add_argument(
        "--reps", type=int, default=1, help="warm single-song runs per setting, median (default 1)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--out", type=Path, default=None, help="where cli.json / cli.md go (default $OUT or bench_out)"
    )
    p.add_argument("--budget", type=float, default=240.0, help="seconds before optional rows are skipped")
    p.add_argument("--paper", action="store_true", help="also time the paper config (48.1M) alone")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: 2 short songs, 1-s chunks, few rows")
    p.add_argument(
        "--rows",
        default="",
        help="comma-separated substrings: only the CLI rows whose label holds one (and the defaults)",
    )
    p.add_argument("--no-models", action="store_true", help="skip the models-alone section")
    p.add_argument(
        "--skip-compiled",
        action="store_true",
        help="leave out the models-alone compiled-glue rows (compiles)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.songs, args.seconds, args.device = min(args.songs, 2), min(args.seconds, 1.0), "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out or Path(os.environ.get("OUT") or ROOT / "bench_out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsm_cli_"))
    b = Bench(args, work, out)
    try:
        (work / "songs").mkdir()
        songs = [work / "songs" / f"song{i:02d}.wav" for i in range(args.songs)]
        for i, s in enumerate(songs):
            make_song(s, args.seconds, i)
        make_song(work / "short.wav", 1.0, 99)
        if b.model_file is not None:
            tiny_model(b.model_file)
        fixed_costs(b, work / "short.wav")
        variants = QUICK_VARIANTS if args.quick else GPU_VARIANTS
        if args.rows:
            wanted = [w for w in args.rows.split(",") if w]
            variants = [v for v in variants if any(w in v[0] for w in wanted)]
        cli_section(b, songs, [("defaults", [], {}), *variants[:N_CORE_VARIANTS]])
        b.result["header"] = header(args)  # imports torch: after the child processes' fixed costs
        if not args.no_models:
            model_section(b)
        cli_section(b, songs, variants[N_CORE_VARIANTS:])
        b.result["header"]["total (s)"] = time.perf_counter() - b.t0
        b.save()
        print((out / "cli.md").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
