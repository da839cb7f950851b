"""Where a fresh ``bsmamba2 separate`` process spends the wall time of one 4-minute song (issue 12).

Runs, in private caches (Triton, inductor, bytecode, the user cache folder), one cold process to fill them,
then warm processes: plain (``--reps`` times, for the spread), with the stand-in warm-up forward
(``BSMAMBA2_CUDA_WARM_UP=1``), without the fast start and exit
(``BSMAMBA2_FAST_START=0``), with ``-X importtime``, and under this script's own sampler (``sample``: a thread that records every
thread's Python stack each millisecond, with the time since process start). Writes ``DIR/profile.json``
(walls and stage seconds), ``DIR/importtime.txt`` and ``DIR/samples.json.gz``;
all packed in ``DIR/profile.tar.gz``; ``summarise DIR`` (the unpacked ``profile/`` folder) prints the main thread's timeline from the samples.

    python scripts/profile_one_song.py run [--seconds 240] [--reps 3] [--out DIR]
    python scripts/profile_one_song.py summarise DIR [--bucket 0.05]
    python scripts/profile_one_song.py sample OUT.json.gz -- ARGS   # python ARGS, sampled
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
T_START = time.perf_counter()


# ---- the sampler (runs inside the profiled process) -----------------------------------------------------------


def _frames(frame: Any, depth: int = 25) -> list[str]:
    out = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        path = Path(code.co_filename)
        name = f"{path.parent.name}/{path.name}" if code.co_name == "<module>" else path.name
        out.append(f"{name}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return out


def sample(out: Path, argv: list[str], period: float = 0.002) -> None:
    """Run ``python argv`` (``-m module ...`` or ``script ...``) in this process, sampling every thread."""
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def loop() -> None:
        me = threading.get_ident()
        while not stop.is_set():
            t = time.perf_counter() - T_START
            names = {th.ident: th.name for th in threading.enumerate()}
            stacks = {names.get(k, str(k)): _frames(f) for k, f in sys._current_frames().items() if k != me}
            samples.append({"t": round(t, 4), "s": stacks})
            time.sleep(period)

    def dump() -> None:
        stop.set()
        th.join()
        with gzip.open(out, "wt") as f:
            json.dump({"end": time.perf_counter() - T_START, "samples": samples}, f)

    real_exit = os._exit

    def exit_after_dump(code: int) -> None:  # the fast exit (bsmamba2.cli.startup) skips finally blocks
        dump()
        real_exit(code)

    os._exit = exit_after_dump  # type: ignore[assignment]
    th = threading.Thread(target=loop, name="sampler", daemon=True)
    th.start()
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        dump()
    sys.exit(code)


# ---- the driver -----------------------------------------------------------------------------------------------


def make_song(path: Path, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    x = 0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    x = x + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(str(path), np.stack([x, np.roll(x, 50)]).T.astype(np.float32), SR, subtype="PCM_16")


def run(args: argparse.Namespace) -> int:
    final = Path(args.out or os.environ.get("OUT", "profile_out"))
    final.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsm_prof_"))
    out = work / "profile"  # packed into FINAL/profile.tar.gz at the end (a device call returns 8 files)
    out.mkdir()
    song = work / "song.wav"
    make_song(song, args.seconds)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PYTHONPYCACHEPREFIX=str(work / "pyc"),
        XDG_CACHE_HOME=str(work / "xdg"),
        TRITON_CACHE_DIR=str(work / "triton"),
        TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"),
    )
    py = sys.executable
    sep = ["-m", "bsmamba2", "-q", "separate", str(song), "-o", str(work / "sep"), "--overwrite"]
    result: dict[str, Any] = {"runs": []}

    def one(
        tag: str, pre: list[str], extra: dict[str, str] | None = None, post: list[str] | None = None
    ) -> None:
        timings = work / f"t_{tag}.json"
        cmd = [*pre, *sep, "--timings", str(timings), *(post or [])]
        t = time.perf_counter()
        r = subprocess.run(cmd, env={**env, **(extra or {})}, capture_output=True, text=True)
        dt = time.perf_counter() - t
        row: dict[str, Any] = {"tag": tag, "wall (s)": round(dt, 3), "rc": r.returncode}
        if timings.exists():
            row.update(json.loads(timings.read_text()))
        if r.returncode != 0:
            row["stderr"] = r.stderr[-1500:]
        (out / f"stderr_{tag}.txt").write_text(r.stderr[-200_000:])
        result["runs"].append(row)
        (out / "profile.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "stderr"}), flush=True)

    try:
        _runs(one, py, env, out, args.reps, result)
    finally:  # a run cut short still returns what it has
        (out / "profile.json").write_text(json.dumps(result, indent=1))
        shutil.copy(out / "profile.json", final / "profile.json")
        with tarfile.open(final / "profile.tar.gz", "w:gz") as tar:
            tar.add(out, arcname="profile")
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _runs(one: Any, py: str, env: dict[str, str], out: Path, reps: int, result: dict[str, Any]) -> None:
    one("cold", [py])
    for i in range(reps):
        one(f"warm{i}", [py])
    for i in range(reps):
        one(f"warm_fast_start_off{i}", [py], {"BSMAMBA2_FAST_START": "0"})
    for i in range(reps):
        one(f"warm_full{i}", [py], {"BSMAMBA2_CUDA_WARM_UP": "1"})
    for name, code in {
        "import torch": "import torch",
        "import torch, triton": "import torch, triton",
        "import separate_jobs": "import bsmamba2.cli.separate_jobs",
    }.items():
        t = time.perf_counter()
        subprocess.run([py, "-c", code], env=env, capture_output=True)
        result.setdefault("imports", {})[name] = round(time.perf_counter() - t, 3)
    one("importtime", [py, "-X", "importtime"])
    shutil.copy(out / "stderr_importtime.txt", out / "importtime.txt")
    one("sampled", [py, str(Path(__file__).resolve()), "sample", str(out / "samples.json.gz"), "--"])


# ---- the summary ----------------------------------------------------------------------------------------------


def _label(stack: list[str]) -> str:
    """The leaf frame and the innermost bsmamba2 frame of a stack (leaf first)."""
    if not stack:
        return "-"
    if stack[0].startswith("<frozen"):  # an import: name the innermost module being executed
        mod = next((f for f in stack if ":<module>:" in f), "")
        return f"import {mod}"
    ours = next(
        (
            f
            for f in stack
            if not f.startswith(("threading.py", "queue.py"))
            and any(
                m in f
                for m in (
                    "separate_jobs",
                    "api.py",
                    "pipeline.py",
                    "apply.py",
                    "batchrun",
                    "loading.py",
                    "separator_net",
                    "mamba2",
                    "ssd",
                    "warmup",
                    "__init__.py:main",
                    "inflight",
                    "ours.py",
                    "audio",
                )
            )
        ),
        "",
    )
    return f"{stack[0]}  <  {ours}" if ours and ours != stack[0] else stack[0]


def summarise(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    data = json.loads(gzip.open(d / "samples.json.gz", "rt").read())
    samples = data["samples"]
    print(f"process end {data['end']:.3f} s, {len(samples)} samples")
    threads = Counter(name for s in samples for name in s["s"])
    for name in sorted(threads, key=lambda n: n != "MainThread"):
        print(f"\n== thread {name}")
        b = args.bucket
        buckets: dict[int, Counter[str]] = {}
        for s in samples:
            if name in s["s"]:
                buckets.setdefault(int(s["t"] / b), Counter())[_label(s["s"][name])] += 1
        for k in sorted(buckets):
            top = buckets[k].most_common(2)
            print(f"{k * b:6.2f}  " + " | ".join(f"{n}x {lab}" for lab, n in top))
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "sample":
        rest = sys.argv[3:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        sample(Path(sys.argv[2]), rest)
        return 0
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seconds", type=float, default=240.0)
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--out", default=None)
    s = sub.add_parser("summarise")
    s.add_argument("dir")
    s.add_argument("--bucket", type=float, default=0.05)
    a = p.parse_args()
    return run(a) if a.cmd == "run" else summarise(a)


if __name__ == "__main__":
    sys.exit(main())
