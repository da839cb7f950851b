"""What the compiled glue costs a fresh process: eager vs torch.compile vs AOTInductor packages (issue 12).

Each setting runs in fresh interpreters, first with empty compile caches (cold: the first run on a machine),
then twice more on the caches that run filled (warm: every later run). A child loads the bundled model
(``fused`` for the compiled settings), runs ``apply_model`` twice on the same mix of ``--batch`` chunks at the
CLI's chunking and precision, and reports both times; the first-call cost is first − second, and the row's
"over eager" is its warm first call minus eager's. The outputs of every setting are compared with eager's.

    python benchmarks/bench_glue_start.py [--device cuda] [--batch 8] [--segment 8] [--out DIR]
    python benchmarks/bench_glue_start.py --device cpu --batch 1 --segment 0.5 --precision fp32  # 2-core VM

Settings: eager (``--no-fused``), ``torch.compile`` (``BSMAMBA2_GLUE_AOT=0``: the glue as before), AOT (the
packages, ``BSMAMBA2_GLUE_AOT=1``). Writes DIR/glue_start.json and .md (DIR: --out, else $OUT, else
./bench_out).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("eager", False, None), ("torch.compile", True, "0"), ("AOT packages", True, "1")]
CHILD_TIMEOUT_S = 420


def child(args: argparse.Namespace) -> None:
    """One fresh process: load, two timed passes over the mix, the output saved for comparison."""
    t0 = time.perf_counter()
    import torch

    from bsmamba2.api import Separator
    from bsmamba2.apply import apply_model

    sep = Separator.from_pretrained(
        None, device=args.device, segment=args.segment, fused=args.fused, precision=args.precision
    )
    dev = sep.device
    n = sep.segment_samples * args.batch  # overlap 0: exactly --batch chunks, one batch
    mix = torch.randn(2, n, generator=torch.Generator().manual_seed(0)).to(dev) * 0.1
    t_load = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t = time.perf_counter()
        y = apply_model(
            sep.model, mix, segment=sep.segment_samples, overlap=0.0, batch_size=args.batch, dtype=sep.dtype
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    torch.save(y.cpu(), args.save)
    print(json.dumps({"start + load (s)": t_load, "first (s)": times[0], "second (s)": times[1]}))


def run_child(
    args: argparse.Namespace, fused: bool, aot: str | None, cache: Path, save: Path
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"), TRITON_CACHE_DIR=str(cache / "triton"),
        XDG_CACHE_HOME=str(cache / "xdg"),
    )  # fmt: skip
    if aot is not None:
        env["BSMAMBA2_GLUE_AOT"] = aot
    cmd = [sys.executable, __file__, "--child", "--device", args.device, "--batch", str(args.batch)]
    cmd += ["--segment", str(args.segment), "--save", str(save), "--fused" if fused else "--no-fused"]
    cmd += ["--precision", args.precision]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-600:])
    row: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    row["process (s)"] = time.perf_counter() - t
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--segment", type=float, default=8.0)
    # auto as the CLI; on a CPU with native bf16, auto times the model once while loading (give fp32 or bf16)
    p.add_argument("--precision", default="auto")
    p.add_argument("--warm", type=int, default=2, help="warm processes per setting (the best is reported)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=False, help=argparse.SUPPRESS)
    p.add_argument("--save", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch

    out = args.out or Path(os.environ.get("OUT") or ROOT / "bench_out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsm_glue_"))
    rows: list[dict[str, Any]] = []
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "device": args.device, "batch": args.batch, "segment (s)": args.segment,
        "precision": args.precision,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "cpus": os.cpu_count(), "rows": rows,
    }  # fmt: skip
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    eager_out = work / "eager.pt"
    for label, fused, aot in SETTINGS:
        cache, save = work / f"cache_{len(rows)}", work / f"out_{len(rows)}.pt"
        try:
            cold = run_child(args, fused, aot, cache, save)
            warm = min(
                (run_child(args, fused, aot, cache, save) for _ in range(args.warm)),
                key=lambda r: r["first (s)"],
            )
        except Exception as e:  # noqa: BLE001 - one failed setting must not lose the others
            rows.append({"setting": label, "note": str(e)[-300:]})
            continue
        row: dict[str, Any] = {
            "setting": label,
            "cold first call (s)": cold["first (s)"],
            "cold process (s)": cold["process (s)"],
            "warm start + load (s)": warm["start + load (s)"],
            "warm first call (s)": warm["first (s)"],
            "steady call (s)": warm["second (s)"],
            "warm first-call cost (s)": warm["first (s)"] - warm["second (s)"],
            "warm process (s)": warm["process (s)"],
        }
        glue = cache / "xdg" / "bsmamba2" / "glue"  # what the AOT setting built (and what failed to build)
        if aot == "1":
            row["packages"] = len(list(glue.glob("*.pt2")))
            row["failed to compile"] = len(list(glue.glob("*.failed")))
        if label == "eager":
            save.rename(eager_out)
        elif eager_out.exists():
            y, ref = torch.load(save), torch.load(eager_out)
            row["relative diff vs eager"] = float((y - ref).norm() / ref.norm())
        rows.append(row)
        (out / "glue_start.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(row), flush=True)
    base = next((r for r in rows if r["setting"] == "eager" and "note" not in r), None)
    for r in rows:
        if base is not None and "note" not in r:
            r["warm first call over eager (s)"] = r["warm first call (s)"] - base["warm first call (s)"]
            r["warm process over eager (s)"] = r["warm process (s)"] - base["warm process (s)"]
    (out / "glue_start.json").write_text(json.dumps(result, indent=1))
    cols = [c for c in rows[0] if c != "setting"] if rows else []
    for r in rows:
        cols += [c for c in r if c not in cols and c != "setting"]
    md = [f"# compiled glue in a fresh process ({result['date']}, {result.get('gpu', args.device)}, torch "
          f"{result['torch']}, batch {args.batch} x {args.segment} s, load {result['load']})\n",
          "| setting | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        md.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
    (out / "glue_start.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
