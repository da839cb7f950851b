"""Evaluation outputs: the per-run aggregation, the Markdown tables and the JSON files (written atomically,
NaN/Inf as null)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bsmamba2.atomic import atomic_write
from bsmamba2.evaluate import metrics, studies


def finite_or_none(x: Any) -> Any:
    """JSON has no NaN/Inf: they become null (NaN = silent frames or no data)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite_or_none(v) for v in x]
    return x


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically, non-finite numbers as null."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(finite_or_none(data), indent=1, allow_nan=False))


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def summarize(
    per_run: dict[float, list[dict[str, Any]]], stems: Sequence[str], overlap: float | None
) -> dict[str, Any]:
    """Aggregate per-track rows: per run (segment) and stem, mean/median uSDR and cSDR, and the Table III
    duration buckets for vocals."""
    runs = []
    for seg, rows in per_run.items():
        entry: dict[str, Any] = {"segment": seg or None, "overlap": overlap, "stems": {}}
        for stem in stems:
            vals = [r["stems"][stem] for r in rows if stem in r["stems"]]
            entry["stems"][stem] = metrics.aggregate(vals)
        regions = [
            studies.RegionScore(d["start"], d["end"], d["duration"], d["bucket"], d["usdr"])
            for r in rows
            for d in r.get("vocal_regions", [])
        ]
        if regions:
            entry["vocal_regions"] = studies.duration_table(regions)
        runs.append(entry)
    return {"runs": runs}


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def summary_markdown(summary: dict[str, Any], title: str) -> str:
    """Markdown tables: metrics per run and stem (paper statistics first), then the vocal-region buckets."""
    lines = [
        f"## {title}",
        "",
        "| segment | stem | uSDR (mean) | cSDR (median) | uSDR (median) | cSDR (mean) | tracks |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in summary["runs"]:
        seg = "–" if r["segment"] is None else f"{r['segment']:g} s"
        for stem, a in r["stems"].items():
            lines.append(
                f"| {seg} | {stem} | {_fmt(a['usdr_mean'])} | {_fmt(a['csdr_median'])} | "
                f"{_fmt(a['usdr_median'])} | {_fmt(a['csdr_mean'])} | {int(a['tracks'])} |"
            )
    buckets = [studies.bucket_label(lo, hi) for lo, hi in studies.DURATION_BUCKETS]
    if any("vocal_regions" in r for r in summary["runs"]):
        lines += ["", "Vocal uSDR by region duration (paper Table III; mean over regions, region count):", ""]
        lines.append("| segment | " + " | ".join(buckets) + " |")
        lines.append("|---|" + "---|" * len(buckets))
        for r in summary["runs"]:
            if "vocal_regions" not in r:
                continue
            seg = "–" if r["segment"] is None else f"{r['segment']:g} s"
            cells = [
                f"{_fmt(r['vocal_regions'][b]['usdr_mean'])} ({int(r['vocal_regions'][b]['regions'])})"
                for b in buckets
            ]
            lines.append(f"| {seg} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
