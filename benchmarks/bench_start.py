"""One song from process start (issue 12's "one 4-minute song in <= 3 s"): the CUDA warm-up's levels side by side.

Fresh ``bsmamba2 separate`` processes on one ``--seconds`` song (16-bit stereo WAV in, 24-bit WAV out), the
CLI's defaults otherwise, in one cache folder that a first (cold) run fills; then ``--reps`` rounds, the
settings interleaved within each round so that load drifts hit them alike:

- ``BSMAMBA2_CUDA_WARM_UP=0``: no driver pre-start, no warm-up thread (each first call pays in the model stage);
- defaults (``libs``): driver started beside ``import torch``, then context, cuBLAS and cuFFT on the warm-up
  thread, no stand-in forward;
- ``BSMAMBA2_CUDA_WARM_UP=1``: all of it, with one batch of silent chunks through a stand-in model
  (``bsmamba2/cli/warmup.py``).

Per setting: the median wall time, the stages of that run (start-up = wall - run; load; warm-up wait = how long
the first file waited for the thread; model; ...) and the thread's phases. Also ``import torch`` + the first
CUDA tensor with and without the driver started beside the import (fixed costs, fresh interpreters).

    python benchmarks/bench_start.py [--seconds 240] [--reps 3] [--device auto] [--out DIR]
    python benchmarks/bench_start.py --quick     # CPU smoke test of the script (the warm-up is CUDA-only)

Writes ``DIR/start.json`` and ``DIR/start.md`` (DIR: ``--out``, else ``$OUT``, else ./bench_out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cli  # noqa: E402 - the CLI benchmark's helpers: child environment, one separate process, songs

SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("no warm-up", {"BSMAMBA2_CUDA_WARM_UP": "0"}),
    ("defaults (warm-up without the forward)", {}),
    ("full warm-up (the stand-in forward too)", {"BSMAMBA2_CUDA_WARM_UP": "1"}),
]
STAGES = ("wall (s)", "start-up (s)", "load (s)", "warm-up wait (s)", "model (s)", "to host (s)")
STAGES += ("encode (s)", "write (s)", "gpu peak (GiB)")


def fixed(b: bench_cli.Bench) -> dict[str, float | str]:
    """``import torch`` + the first CUDA tensor, plain and with the driver started beside the import."""
    py = sys.executable
    first = "torch.zeros(1, device='cuda')"
    probes = {
        "import torch + CUDA start-up (s)": f"import torch; {first}",
        "the same, driver started beside the import (s)": (
            f"from bsmamba2.cli import cuda_prestart as p; p.start('cuda'); import torch; {first}"
        ),
    }
    out: dict[str, float | str] = {}
    for name, code in probes.items():
        try:  # interleaved, best of 3
            out[name] = min(bench_cli.wall([py, "-c", code], b.env(None)) for _ in range(3))
        except Exception as e:  # noqa: BLE001 - reported, the rest still runs
            out[name] = f"failed: {str(e)[-200:]}"
    return out


def run(b: bench_cli.Bench, song: Path) -> dict[str, Any]:
    cache = Path(tempfile.mkdtemp(prefix="cache_", dir=b.work))
    cold = bench_cli.separate(b, [song], [], cache, "cold")  # fills the Triton / bytecode caches
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in SETTINGS}
    for i in range(b.args.reps):
        for name, extra in SETTINGS:
            tag = f"{name.replace(' ', '_')}_{i}"
            runs[name].append(bench_cli.separate(b, [song], [], cache, tag, extra))
    rows = []
    for name, extra in SETTINGS:
        walls = [r["wall (s)"] for r in runs[name]]
        median = sorted(runs[name], key=lambda r: r["wall (s)"])[len(walls) // 2]
        phases = {k: v for k, v in median.items() if k.startswith("warm-up ") and k != "warm-up wait (s)"}
        rows.append(
            {
                "setting": name,
                "env": " ".join(f"{k}={v}" for k, v in extra.items()) or "(defaults)",
                "walls (s)": [round(w, 3) for w in walls],
                "median wall (s)": statistics.median(walls),
                **{k: median.get(k, "") for k in STAGES[1:]},
                "phases": phases,
            }
        )
    return {"cold (defaults)": {k: cold.get(k, "") for k in STAGES}, "rows": rows}


def report(res: dict[str, Any]) -> str:
    h = res["header"]
    lines = [
        "# One song from process start: the CUDA warm-up's levels (issue 12)\n",
        f"{h['date']}, {h['device']}, torch {h['torch']}, load {h['load']}; `{h['command']}`; a {h['seconds']} s song, "
        f"{h['reps']} rounds, settings interleaved\n",
    ]
    lines += [f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in res["fixed"].items()]
    lines.append("")
    rows = [{k: v for k, v in r.items() if k != "phases"} for r in res["rows"]]
    lines.append(bench_cli.md_table(rows))
    lines.append("\nWarm-up thread phases (s), median run of each setting:\n")
    lines += [f"- {r['setting']}: {r['phases']}" for r in res["rows"]]
    lines.append(f"\nCold run (empty caches, defaults): {res['cold (defaults)']}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="CPU smoke test: a tiny model, a 1 s song, 1 round")
    args = p.parse_args(argv)
    cli_args = bench_cli.parse(
        ["--device", args.device, "--seconds", str(args.seconds), "--songs", "1"]
        + (["--quick"] if args.quick else [])
    )
    cli_args.reps = 1 if args.quick else args.reps
    out = args.out or Path(os.environ.get("OUT") or bench_cli.ROOT / "bench_out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsm_start_"))
    b = bench_cli.Bench(cli_args, work, out)
    try:
        song = work / "song.wav"
        bench_cli.make_song(song, cli_args.seconds, 0)
        if b.model_file is not None:
            bench_cli.tiny_model(b.model_file)
        t = time.perf_counter()
        res: dict[str, Any] = {"fixed": {} if args.quick else fixed(b), **run(b, song)}
        res["header"] = {
            **bench_cli.header(cli_args),
            "command": "python benchmarks/bench_start.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "reps": cli_args.reps,
            "total (s)": time.perf_counter() - t,
        }
        (out / "start.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "start.md").write_text(report(res))
        print(report(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
