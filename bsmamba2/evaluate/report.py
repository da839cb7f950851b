"""Evaluation outputs: the per-run aggregation, the Markdown tables and the JSON files (written atomically).

Both files say the same: a score with no data (NaN: silent frames or none left) is ``null`` in JSON and
"–" in Markdown; a perfect score (+inf dB: an estimate without error, e.g. a baseline's residual in the
frames without vocals) is the string ``"inf"`` in JSON (which has no infinity) and "inf" in Markdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bsmamba2.atomic import atomic_write
from bsmamba2.evaluate import leakage, metrics, studies


def json_value(x: Any) -> Any:
    """``x`` with every non-finite float made JSON: NaN -> None, ±inf -> "inf" / "-inf" (nested too)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_value(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_value(v) for v in x]
    return x


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically, non-finite numbers as :func:`json_value` says."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(json_value(data), indent=1, allow_nan=False))


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def summarize(
    per_run: dict[float, list[dict[str, Any]]], stems: Sequence[str], overlap: float | None
) -> dict[str, Any]:
    """Aggregate per-track rows: per run (segment) and stem, mean/median uSDR and cSDR, the Table III
    duration buckets for vocals, and the vocal leakage where some reference has silent samples."""
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
        leak = leakage.leakage_summary([r["vocal_leakage"] for r in rows if "vocal_leakage" in r])
        if leak is not None:
            entry["vocal_leakage"] = leak
        runs.append(entry)
    return {"runs": runs}


def _fmt(x: float | None) -> str:
    """A score as a table cell: "–" for no data, "inf" / "-inf", else two decimals (see the docstring)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _tracks(a: dict[str, Any]) -> str:
    """The tracks a row averages: uSDR's count, and cSDR's where it differs (tracks without cSDR data)."""
    n, nc = int(a["tracks"]), int(a.get("csdr_tracks", a["tracks"]))
    return f"{n}" if nc == n else f"{n} (cSDR {nc})"


def _leakage_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The vocal-leakage table (:mod:`.leakage`): one row per run and track set; none without silence."""
    if not any("vocal_leakage" in r for r in runs):
        return []
    lines = [
        "",
        "Vocal leakage where the reference has no voice: the estimated vocals' energy relative to the",
        f"mixture's there, dB (lower is better; issue 14's target {leakage.TARGET_DB:g} dB; floor "
        f"{leakage.LEAK_FLOOR_DB:g} dB):",
        "",
        f"| segment | tracks | silent (s) | energy-weighted | mean over tracks | worst track "
        f"| 1 s windows above {leakage.TARGET_DB:g} dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        seg = "–" if r["segment"] is None else f"{r['segment']:g} s"
        for name, a in r.get("vocal_leakage", {}).items():
            n = f"{a['tracks']} {'with silence' if name == 'silent' else 'instrumental'}"
            if a["tracks_without"]:
                n += f" ({a['tracks_without']} without)"
            share = a["windows_above_share"]
            windows = f"{a['windows_above']} / {a['windows']}"
            windows += "" if isinstance(share, float) and math.isnan(share) else f" ({100 * share:.1f} %)"
            lines.append(
                f"| {seg} | {n} | {a['silent_seconds']:.1f} | {_fmt(a['leakage_db'])} | "
                f"{_fmt(a['leakage_mean_db'])} | {_fmt(a['leakage_max_db'])} | {windows} |"
            )
    return lines


def summary_markdown(summary: dict[str, Any], title: str) -> str:
    """Markdown tables: metrics per run and stem (paper statistics first), then the vocal-region buckets and
    the vocal leakage."""
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
                f"{_fmt(a['usdr_median'])} | {_fmt(a['csdr_mean'])} | {_tracks(a)} |"
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
    lines += _leakage_lines(summary["runs"])
    if summary.get("errors"):
        lines += ["", "Not scored:", ""]
        lines += [f"- {track}: {why}" for track, why in summary["errors"].items()]
    return "\n".join(lines) + "\n"
