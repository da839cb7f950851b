"""Peak host memory of ``bsmamba2 separate --device cpu`` at its defaults, as a user's machine sees it.

Each run is a fresh interpreter (``python -m bsmamba2 separate IN -o OUT --model M --device cpu``) whose
peak resident set (``ru_maxrss`` from ``os.wait4``) is read when it exits, so imports, the model, the chunk
engine, the decoders and the writers are all counted. Inputs are 16-bit stereo 44.1 kHz WAVs of noise
(the arithmetic does not depend on the content), written block by block. Models: the bundled model and the
paper config with random weights (saved once to a temp folder).

    python benchmarks/bench_memory.py                  # 2-minute and 60-minute inputs
    python benchmarks/bench_memory.py --quick          # 20 s and 60 s: the peak is reached in the first batch
    python benchmarks/bench_memory.py --seconds 30 --models bundled

Writes ``$OUT/memory.md`` and ``$OUT/memory.json`` (``$OUT`` defaults to ./bench_out) and prints the table.
Run it on an idle machine for the wall times; the peaks do not depend on load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import env_info, header_md, md_table, out_dir  # noqa: E402
from bsmamba2.atomic import atomic_write  # noqa: E402

SR = 44100
MODELS = ("bundled", "paper")


def write_noise(path: Path, seconds: float, block_seconds: float = 10.0) -> Path:
    """A 16-bit stereo WAV of quiet noise, ``seconds`` long, written ``block_seconds`` at a time."""
    rng = np.random.default_rng(0)
    total, block = round(seconds * SR), round(block_seconds * SR)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            f.write((0.1 * rng.standard_normal((min(block, total - start), 2))).astype(np.float32))
    return path


def paper_model(folder: Path) -> Path:
    """The paper config with random weights, saved as our format."""
    import torch

    from bsmamba2.checkpoints import save_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    torch.manual_seed(0)
    return save_model(build_model(ModelConfig.paper()), folder / "paper_random.safetensors")


def peak_of_separate(model: Path | None, song: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """Run one ``bsmamba2 separate`` in a fresh process; its peak RSS (MiB), wall time and exit code."""
    argv = [sys.executable, "-m", "bsmamba2", "-q", "separate", str(song), "-o", str(out)]
    argv += ["--device", "cpu", "--overwrite", *extra] + ([] if model is None else ["--model", str(model)])
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"peak_mib": round(usage.ru_maxrss / 1024), "wall_s": round(wall, 1), "rc": proc.returncode}
    if proc.returncode != 0:
        row["error"] = err.strip().splitlines()[-1:] if err.strip() else ["?"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 s and 60 s inputs instead of 2 and 60 minutes")
    ap.add_argument("--seconds", type=float, nargs="+", default=None, help="input lengths (overrides)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--extra", default="", help="more separate options, e.g. '--batch-size 4'")
    args = ap.parse_args()
    lengths = args.seconds or ([20.0, 60.0] if args.quick else [120.0, 3600.0])
    info = env_info()
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        folder = Path(tmp)
        models = {"bundled": None, "paper": paper_model(folder) if "paper" in args.models else None}
        for seconds in lengths:
            song = write_noise(folder / f"noise_{seconds:g}s.wav", seconds)
            for name in args.models:
                row = {"model": name, "input_s": seconds}
                row.update(peak_of_separate(models[name], song, folder / "out", args.extra.split()))
                rows.append(row)
                print(json.dumps(row), flush=True)
            song.unlink()
    command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
    table = md_table(rows, ["model", "input_s", "peak_mib", "wall_s", "rc"], "bsmamba2 separate --device cpu")
    text = f"{header_md(info, command)}  \nLoad average at start: {load[0]:.1f}\n\n{table}\n"
    print(text)
    out = out_dir()
    with atomic_write(out / "memory.md") as tmp_md:
        tmp_md.write_text(text)
    with atomic_write(out / "memory.json") as tmp_json:
        tmp_json.write_text(json.dumps({"info": info, "load": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
