"""End-to-end separation speed as a user sees it: ``bsmamba2 separate`` from process start to files written.

What it measures, in one run, on one device:

1. Fixed costs: ``import torch`` and ``import bsmamba2.cli`` in fresh interpreters.
2. ``bsmamba2 separate`` on one 4-minute stereo song (16-bit WAV, 44.1 kHz), default settings, for each model
   file (the bundled model; the paper config with random weights): a *cold* run with empty Triton / inductor /
   bsmamba2 caches, then *warm* runs (the median of ``--reps``). × real time = audio seconds / wall seconds.
3. The same over a folder of ``--songs`` such songs in one process (× real time over the whole folder).
4. A cProfile of one warm single-song run: where the wall time goes (top functions by cumulative time).
5. The models alone through the package's chunk engine (``apply_model``) on a 4-minute GPU/CPU tensor at the
   CLI's default chunking: BSMamba2 (both model files), the BS-RoFormer baseline (74.5M, random weights) and
   htdemucs (pip ``demucs``, random weights: the arithmetic is the same as the trained model's), so every
   model is timed with the same chunking, overlap and precision.

    python benchmarks/bench_cli.py [--songs 10] [--seconds 240] [--reps 2] [--device auto]

Writes ``$OUT/cli.md`` and ``$OUT/cli.json`` (``$OUT`` defaults to ./bench_out) and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def make_song(path: Path, seconds: float, seed: int) -> None:
    """A stereo 16-bit WAV: a chord, a gated melody and noise (content does not change the arithmetic)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n, dtype=np.float64) / SR
    x = 0.15 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 165 * t)
    x = x + 0.1 * (np.sin(2 * np.pi * 0.5 * t) > 0) * np.sin(2 * np.pi * (440 + 20 * np.sin(t)) * t)
    stereo = np.stack([x, np.roll(x, 37)]) + 0.02 * rng.standard_normal((2, n))
    sf.write(str(path), stereo.T.astype(np.float32), SR, subtype="PCM_16")


def fresh_env(cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if cache is not None:  # a cold start: nothing compiled or tuned before
        env["TRITON_CACHE_DIR"] = str(cache / "triton")
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")
        env["XDG_CACHE_HOME"] = str(cache / "xdg")
    return env


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return dt


def separate_cmd(inputs: list[Path], out: Path, model: Path | None, device: str) -> list[str]:
    cmd = [sys.executable, "-m", "bsmamba2", "separate", *map(str, inputs), "-o", str(out), "--overwrite"]
    cmd += ["--device", device]
    return cmd + (["--model", str(model)] if model is not None else [])


def paper_model_file(folder: Path) -> Path:
    """The paper config (48.1M) with random weights, saved as a model file."""
    import torch

    from bsmamba2.checkpoints import save_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    torch.manual_seed(0)
    return save_model(build_model(ModelConfig.paper()), folder / "paper.safetensors")


def cli_rows(args: argparse.Namespace, work: Path, songs: list[Path]) -> list[dict[str, Any]]:
    models: list[tuple[str, Path | None]] = [("bundled (6.8M)", None)]
    if not args.bundled_only:
        models.append(("paper (48.1M)", paper_model_file(work)))
    rows = []
    audio_one, audio_all = args.seconds, args.seconds * len(songs)
    for name, mfile in models:
        cold_cache = Path(tempfile.mkdtemp(prefix="bsm_cold_", dir=work))
        cold = wall(separate_cmd(songs[:1], work / "o1", mfile, args.device), fresh_env(cold_cache))
        warm_env = fresh_env(cold_cache)  # the caches the cold run filled
        warm = statistics.median(
            wall(separate_cmd(songs[:1], work / "o1", mfile, args.device), warm_env) for _ in range(args.reps)
        )
        folder = wall(separate_cmd([work / "songs"], work / "o2", mfile, args.device), warm_env)
        rows.append(
            {
                "model": name,
                "one song, cold (s)": cold,
                "one song, warm (s)": warm,
                "one song, warm (x real time)": audio_one / warm,
                f"{len(songs)} songs, one process (s)": folder,
                f"{len(songs)} songs (x real time)": audio_all / folder,
                "_warm_env": warm_env,
                "_model": mfile,
            }
        )
    return rows


def profile_top(args: argparse.Namespace, work: Path, song: Path, row: dict[str, Any], n: int = 22) -> str:
    prof = work / "sep.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "bsmamba2"]
    cmd += separate_cmd([song], work / "o3", row["_model"], args.device)[3:]
    total = wall(cmd, row["_warm_env"])
    st = pstats.Stats(str(prof))
    stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    items = sorted(stats.items(), key=lambda kv: kv[1][3], reverse=True)
    lines = [f"cProfile of one warm run ({row['model']}): {total:.2f} s wall under the profiler", ""]
    lines += ["| cumulative s | calls | function |", "|---|---|---|"]
    for (file, line, fn), (_cc, nc, _tt, ct, _callers) in items[:n]:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(f"| {ct:.2f} | {nc} | `{fn}` ({where}) |")
    return "\n".join(lines)


def model_only_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Each model alone through ``apply_model`` at the CLI's default chunking, on a tensor on the device."""
    import torch

    from bsmamba2.api import Separator
    from bsmamba2.apply import apply_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    default = Separator.from_pretrained(None, device=args.device)  # the CLI's defaults
    dev, dtype = default.device, default.dtype
    seg, overlap, batch = default.segment_samples, default.overlap, default.batch_size
    mix = torch.randn(2, int(args.seconds * SR), device=dev) * 0.1
    cands: list[tuple[str, Any]] = [
        ("BSMamba2 bundled (6.8M)", lambda: default.model),
        (
            "BSMamba2 paper (48.1M)",
            lambda: Separator.from_pretrained(work / "paper.safetensors", device=dev).model,
        ),
        ("BS-RoFormer baseline (74.5M)", lambda: build_model(ModelConfig.roformer_paper()).to(dev).eval()),
    ]
    if args.bundled_only:
        eager = (
            "BSMamba2 bundled, eager glue",
            lambda: Separator.from_pretrained(None, device=dev, fused=False).model,
        )
        cands = [
            cands[0],
            eager,
            cands[2],
            ("htdemucs (demucs 4.1, 26.9M)", lambda: htdemucs().to(dev).eval()),
        ]
    cands += (
        [
            ("htdemucs (demucs 4.1, 26.9M)", lambda: htdemucs().to(dev).eval()),
        ]
        if not args.bundled_only
        else []
    )
    rows = []
    for name, make in cands:
        try:
            model = make()
            run = lambda m=model: apply_model(  # noqa: E731
                m, mix, segment=seg, overlap=overlap, batch_size=batch, dtype=dtype
            )
            run()
            times = []
            for _ in range(2):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                run()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            rows.append({"model": name, "s": min(times), "x real time": args.seconds / min(times)})
        except Exception as e:  # noqa: BLE001 - a missing optional baseline is a row, not a crash
            rows.append({"model": name, "s": float("nan"), "x real time": float("nan"), "note": str(e)[:120]})
    return rows


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


def md_table(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in rows[0] if not c.startswith("_")]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                f"{r.get(c):.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols
            )
            + " |"
        )
    return "\n".join(out)


def fixed_costs() -> dict[str, float]:
    env = fresh_env(None)
    return {
        "import torch (s)": wall([sys.executable, "-c", "import torch"], env),
        "import bsmamba2.cli (s)": wall([sys.executable, "-c", "import bsmamba2.cli"], env),
        "bsmamba2 --help (s)": wall([sys.executable, "-m", "bsmamba2", "--help"], env),
    }


def header(args: argparse.Namespace) -> str:
    import torch

    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu"
        else platform.processor()
    )
    return (
        f"{datetime.date.today()}, {dev}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores; command: `python benchmarks/bench_cli.py {' '.join(sys.argv[1:])}`"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--songs", type=int, default=10)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-profile", action="store_true")
    p.add_argument("--bundled-only", action="store_true", help="only the bundled model (a quick check)")
    args = p.parse_args(argv)
    out = Path(os.environ.get("OUT", ROOT / "bench_out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsm_cli_"))
    try:
        (work / "songs").mkdir()
        songs = [work / "songs" / f"song{i:02d}.wav" for i in range(args.songs)]
        for i, s in enumerate(songs):
            make_song(s, args.seconds, i)
        report = [f"# bsmamba2 separate, end to end\n\n{header(args)}\n"]
        costs = fixed_costs()
        report.append("Fixed costs: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()) + "\n")
        rows = cli_rows(args, work, songs)
        report.append(md_table(rows) + "\n")
        if not args.skip_profile:
            report.append(profile_top(args, work, songs[0], rows[0]) + "\n")
        report.append("Models alone, the CLI's chunking and precision, one 4-minute tensor on the device:\n")
        report.append(md_table(model_only_rows(args, work)) + "\n")
        text = "\n".join(report)
        (out / "cli.md").write_text(text)
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        (out / "cli.json").write_text(json.dumps({"fixed": costs, "cli": clean}, indent=1))
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
