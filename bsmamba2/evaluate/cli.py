"""``bsmamba2 evaluate``: uSDR / cSDR of a model (or a baseline) on a MUSDB18HQ-layout folder.

Follows the official evaluation (OFFICIAL_SPEC §7): whole test tracks at 44.1 kHz, chunks of ``--segment``
seconds with **no overlap by default** (plain concatenation, the last chunk zero-padded), cSDR as the median
of 1 s frames then the median over tracks, uSDR as the mean over tracks. Several ``--segment`` values give
the paper's Table IV in one run; the vocal-region study (Table III) is computed alongside.

Writes ``OUT/summary.md`` and ``OUT/summary.json``, and per run ``OUT/segment_<S>s/tracks/<track>.json``
(plus ``estimates/<track>/<stem>.wav`` with ``--save-estimates``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.apply import apply_model
from bsmamba2.device import BACKEND_HELP, BACKENDS, PRECISIONS
from bsmamba2.errors import UserError
from bsmamba2.evaluate import metrics, studies
from bsmamba2.stems import residual_name

log = logging.getLogger(__name__)

BASELINES = ("mixture", "oracle-irm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help="model file to evaluate")
    src.add_argument("--baseline", choices=BASELINES, help="score a reference point instead of a model")
    parser.add_argument(
        "--data", required=True, type=Path, help="MUSDB18HQ-layout root (ROOT/test/<track>/...)"
    )
    parser.add_argument("--subset", default="test", help="subset folder (default test)")
    parser.add_argument(
        "--segment", type=float, nargs="+", default=[8.0],
        help="inference chunk length(s) in seconds (default 8; e.g. 1 2 4 8 12 16 for Table IV)",
    )  # fmt: skip
    parser.add_argument("--overlap", type=float, default=0.0, help="chunk overlap (default 0: the paper's)")
    parser.add_argument("--batch-size", type=int, default=4, help="chunks per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="autocast precision (default auto; the official evaluation used fp16 on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--stems", nargs="+", default=None, help="stems to score (default: the model's; baselines: vocals)"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument("--limit", type=int, default=None, help="only the first N tracks (quick checks)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default evaluation/<model>-<subset>)"
    )
    parser.add_argument("--save-estimates", action="store_true", help="also write the estimates as float WAV")


def _finite_or_none(x: Any) -> Any:
    """JSON has no NaN/Inf: they become null (NaN = silent frames or no data)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(_finite_or_none(data), indent=1, allow_nan=False))
    tmp.replace(path)


def score_track(
    mix: np.ndarray,
    refs: dict[str, np.ndarray],
    estimates: dict[str, np.ndarray],
    sample_rate: int = 44100,
    regions: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Metrics of one track: {stem: {usdr, csdr, csdr_frames}} for every estimated stem with a reference,
    plus "vocal_regions" (Table III) when vocals are scored. Arrays are (C, N) at ``sample_rate``."""
    window = sample_rate  # 1 s frames
    out: dict[str, Any] = {"stems": {}}
    for stem, est in estimates.items():
        ref = refs.get(stem)
        if ref is None:
            continue
        frames = metrics.sdr_frames(ref, est, window, window)
        out["stems"][stem] = {
            "usdr": metrics.usdr(ref, est),
            "csdr": metrics.nanmedian(frames),
            "csdr_frames": frames.tolist(),
        }
    if "vocals" in estimates and "vocals" in refs:
        if regions is None:
            regions = studies.vocal_regions(refs["vocals"], sample_rate)
        scores = studies.region_scores(refs["vocals"], estimates["vocals"], regions, sample_rate)
        out["vocal_regions"] = [r.to_dict() for r in scores]
    return out


def run(args: argparse.Namespace) -> int:
    from bsmamba2.data import musdb  # data stack only when evaluating

    if any(s <= 0 for s in args.segment):
        raise UserError("--segment values must be positive")
    if not 0.0 <= args.overlap < 1.0:
        raise UserError(f"--overlap must be in [0, 1), got {args.overlap}")
    model = None
    sep = None
    if args.model is not None:
        from bsmamba2.api import Separator

        sep = Separator.from_pretrained(
            args.model,
            device=args.device,
            precision=args.precision,
            overlap=args.overlap,
            batch_size=args.batch_size,
            backend=args.backend,
        )
        model = sep.model
        model_stems: tuple[str, ...] = sep.model_stems
        rate = sep.sample_rate
        name = Path(args.model).stem
    else:
        # a baseline "model" for the requested stems (vocals alone also gets instrumental = mix - vocals)
        model_stems = tuple(s for s in (args.stems or ("vocals",)) if s != "instrumental") or ("vocals",)
        rate = musdb.SAMPLE_RATE
        name = args.baseline
    resid = residual_name(model_stems)
    available = (*model_stems, *([resid] if resid else []))
    stems = tuple(args.stems) if args.stems else available
    bad = [s for s in stems if s not in available]
    if bad:
        raise UserError(f"cannot score {', '.join(bad)}: the model gives {', '.join(available)}")
    ref_stems = tuple(s for s in model_stems if s != resid)
    # baselines and runs without a residual only need the stems themselves; oracle needs every stem
    tracks = musdb.find_tracks(args.data, args.subset, stems=ref_stems)
    if args.limit is not None:
        tracks = tracks[: args.limit]
    out_root: Path = args.out or Path("evaluation") / f"{name}-{args.subset}"
    segments = [float(s) for s in args.segment] if model is not None else [0.0]
    run_dirs = {s: out_root / (f"segment_{s:g}s" if model is not None else "baseline") for s in segments}

    per_run: dict[float, list[dict[str, Any]]] = {s: [] for s in segments}
    failed: list[str] = []
    for info in tqdm(tracks, unit="track", disable=len(tracks) < 2):
        try:
            mix, refs = musdb.load_track(
                info, stems=None if args.baseline == "oracle-irm" else ref_stems, sample_rate=rate
            )
            meta = musdb.load_meta(info)
        except UserError as e:
            log.error("%s: %s", info.name, e)
            failed.append(info.name)
            continue
        true_stems = dict(refs)  # the files' stems, before adding the derived residual
        if resid is not None and ref_stems[0] in refs:
            refs[resid] = mix - refs[ref_stems[0]]  # e.g. instrumental = mixture - vocals
        regions = studies.regions_from_meta(meta, rate) if meta and meta.get("phrases") else None
        for seg in segments:
            if model is not None:
                assert sep is not None
                y = apply_model(
                    model,
                    torch.from_numpy(mix),
                    segment=max(1, round(seg * rate)),
                    overlap=args.overlap,
                    batch_size=args.batch_size,
                    dtype=sep.dtype,
                ).numpy()  # (S, 2, N)
                estimates = dict(zip(model_stems, y, strict=True))
            elif args.baseline == "mixture":
                estimates = studies.mixture_baseline(mix, stems)
            else:
                estimates = studies.oracle_irm(mix, true_stems)
            if resid is not None and resid not in estimates:
                estimates[resid] = mix - estimates[model_stems[0]]
            estimates = {k: v for k, v in estimates.items() if k in stems}
            row = {
                "track": info.name,
                "duration": mix.shape[-1] / rate,
                "regions_from": "meta.json" if regions is not None else "energy detector",
                **score_track(mix, refs, estimates, rate, regions),
            }
            per_run[seg].append(row)
            _write_json(run_dirs[seg] / "tracks" / f"{info.name}.json", row)
            if args.save_estimates:
                for stem, est in estimates.items():
                    audio.write(
                        run_dirs[seg] / "estimates" / info.name / f"{stem}.wav", est, rate, subtype="float"
                    )

    summary = summarize(per_run, stems, overlap=args.overlap if model is not None else None)
    summary.update({"model": name, "data": str(args.data), "subset": args.subset, "failed": failed})
    table = summary_markdown(summary, title=f"{name} on {args.data} ({args.subset}, {len(tracks)} tracks)")
    _write_json(out_root / "summary.json", summary)
    (out_root / "summary.md").write_text(table)
    print(table)
    print(f"results in {out_root}", file=sys.stderr)
    if failed:
        print(
            f"bsmamba2 evaluate: error: {len(failed)} track(s) failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


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
