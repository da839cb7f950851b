"""Compare a 1-GPU and a 2-GPU training run of the same config (scripts/ddp_check.sh): samples/s and loss curves.

    python scripts/ddp_compare.py RUN1/log.txt RUN2/log.txt --global-batch 16 [--json out.json]

Reads the trainer's log lines (``step N  loss L ... R steps/s``; torchrun may print each line once per rank, so
steps are de-duplicated), drops the first logged interval (compilation and autotuning), and prints a Markdown
report: median steps/s and samples/s of each run, the speed-up, and the two loss curves side by side with their
mean absolute and relative difference.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"step (\d+)\s+loss ([0-9.eE+-]+).*?([0-9.]+) steps/s")


def parse(path: Path) -> dict[int, tuple[float, float]]:
    """step -> (loss, steps/s of the interval ending at that step)."""
    out: dict[int, tuple[float, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.search(line)
        if m:
            out.setdefault(int(m.group(1)), (float(m.group(2)), float(m.group(3))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("one", type=Path, help="log.txt of the 1-GPU run")
    ap.add_argument("two", type=Path, help="log.txt of the 2-GPU run")
    ap.add_argument("--global-batch", type=int, required=True, help="examples per optimizer step (both runs)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = {"1 GPU": parse(args.one), "2 GPUs": parse(args.two)}
    if not all(runs.values()):
        print(f"ddp_compare: no step lines in {[k for k, v in runs.items() if not v]}", file=sys.stderr)
        return 1
    rows = []
    for name, r in runs.items():
        steps = sorted(r)[1:] or sorted(r)  # the first interval holds compilation
        sps = statistics.median(r[s][1] for s in steps)
        rows.append(dict(run=name, steps_per_s=sps, samples_per_s=sps * args.global_batch, last_step=max(r)))
    speedup = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
    common = sorted(set(runs["1 GPU"]) & set(runs["2 GPUs"]))
    diffs = [abs(runs["2 GPUs"][s][0] - runs["1 GPU"][s][0]) for s in common]
    rel = [d / runs["1 GPU"][s][0] for d, s in zip(diffs, common)]
    lines = [
        f"Global batch {args.global_batch} in both runs (1 GPU: gradient accumulation; 2 GPUs: one micro-batch "
        "per rank). Speeds: median over logged intervals after the first.",
        "",
        "| run | steps/s | samples/s | last step |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['run']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | {r['last_step']} |" for r in rows
    ]
    lines += ["", f"**Speed-up, 2 GPUs vs 1: {speedup:.2f}×** (samples/s)", ""]
    if common:
        lines += [
            f"Loss at the {len(common)} common logged steps: mean |Δ| {statistics.mean(diffs):.4f}, "
            f"mean relative {100 * statistics.mean(rel):.1f} %, max relative {100 * max(rel):.1f} %.",
            "",
            "| step | loss, 1 GPU | loss, 2 GPUs |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {s} | {runs['1 GPU'][s][0]:.4f} | {runs['2 GPUs'][s][0]:.4f} |" for s in common]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(dict(rows=rows, speedup=speedup, curves={k: v for k, v in runs.items()}), indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
