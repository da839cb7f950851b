"""``bsmamba2 evaluate``: uSDR / cSDR of a model (or a baseline) on a MUSDB18HQ-layout folder.

Follows the official evaluation (OFFICIAL_SPEC §7): whole test tracks at 44.1 kHz, chunks of ``--segment``
seconds with **no overlap by default** (plain concatenation, the last chunk zero-padded), cSDR as the median
of 1 s frames then the median over tracks, uSDR as the mean over tracks. Several ``--segment`` values give
the paper's Table IV in one run; the vocal-region study (Table III) is computed alongside, and so is the vocal
leakage where the reference has no voice (:mod:`~bsmamba2.evaluate.leakage`; issue 14's "-20 dB").

Writes ``OUT/summary.md`` and ``OUT/summary.json`` (with the ``vocal_bank`` digests that corpus v2 tracks name
in their meta.json: the same seed renders other v2 songs from another build of the bank), and per run
``OUT/segment_<S>s/tracks/<track>.json`` (plus ``estimates/<track>/<stem>.wav`` with ``--save-estimates``). Models are run through ``Separator``; the
logic lives in :mod:`~bsmamba2.evaluate.runner`, :mod:`~bsmamba2.evaluate.scoring`,
:mod:`~bsmamba2.evaluate.leakage` and :mod:`~bsmamba2.evaluate.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bsmamba2.atomic import make_folder, write_failure
from bsmamba2.cli import options
from bsmamba2.data import layouts
from bsmamba2.data.musdb import TrackInfo, load_meta
from bsmamba2.errors import UserError
from bsmamba2.evaluate.report import summarize, summary_markdown, write_json, write_text
from bsmamba2.evaluate.runner import (
    BASELINES,
    Candidate,
    Results,
    baseline_candidate,
    evaluate,
    model_candidate,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    options.add_model(src, help="model file to evaluate")
    src.add_argument("--baseline", choices=BASELINES, help="score a reference point instead of a model")
    parser.add_argument(
        "--data", required=True, type=Path, help="MUSDB18HQ-layout root (ROOT/test/<track>/...)"
    )
    parser.add_argument("--subset", default="test", help="subset folder (default test)")
    parser.add_argument(
        "--layout", default=layouts.DEFAULT_LAYOUT, choices=tuple(layouts.LAYOUTS),
        help=f"how --data is organised (default {layouts.DEFAULT_LAYOUT}; see docs/data.md)",
    )  # fmt: skip
    options.add_chunking(
        parser, overlap=0.0, overlap_help="chunk overlap (default 0: the paper's)", segments=True,
        segment_help="inference chunk length(s) in seconds (default 8; e.g. 1 2 4 8 12 16 for Table IV)",
    )  # fmt: skip
    options.add_device(
        parser, precision_help="autocast precision (default auto; the official evaluation used fp16 on CUDA)"
    )
    parser.add_argument(
        "--stems", nargs="+", default=None, help="stems to score (default: the model's; baselines: vocals)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N tracks (quick checks)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default evaluation/<model>-<subset>)"
    )
    parser.add_argument("--save-estimates", action="store_true", help="also write the estimates as float WAV")


def run(args: argparse.Namespace) -> int:
    options.check(args, device=args.model is not None)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    candidate = _candidate(args)
    stems = candidate.check_stems(args.stems)
    tracks = layouts.find_tracks(args.data, args.subset, stems=candidate.stems, layout=args.layout)
    if args.limit is not None:
        tracks = tracks[: args.limit]
    out_root: Path = args.out or Path("evaluation") / f"{candidate.name}-{args.subset}"
    try:
        make_folder(out_root)  # an unwritable --out fails here, before any track is separated
        results = _evaluate_and_report(args, candidate, stems, tracks, out_root)
    except OSError as e:  # a full disk: the files written so far are complete (atomic_write)
        raise write_failure(out_root, e) from None
    if results.failed:
        failed = ", ".join(results.failed)
        print(f"bsmamba2 evaluate: error: {len(results.failed)} track(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


def _evaluate_and_report(
    args: argparse.Namespace,
    candidate: Candidate,
    stems: tuple[str, ...],
    tracks: list[TrackInfo],
    out_root: Path,
) -> Results:
    """Score every track, write summary.json / summary.md under ``out_root`` and print the table."""
    results = evaluate(
        candidate,
        tracks,
        stems,
        args.segment,
        out_root,
        save_estimates=args.save_estimates,
        progress=not args.quiet,
    )
    overlap = args.overlap if candidate.separator is not None else None
    summary = summarize(results.per_run, stems, overlap=overlap)
    summary.update({"model": candidate.name, "data": str(args.data), "subset": args.subset})
    summary["failed"] = results.failed
    summary["errors"] = results.errors
    scored = len(tracks) - len(results.failed)
    counts = f"{scored} track{'s' if scored != 1 else ''} scored"
    if results.failed:
        counts += f", {len(results.failed)} failed"
    banks = _vocal_banks(tracks)
    if banks:  # corpus v2 renders: which build of the vocal bank these songs were drawn from
        summary["vocal_banks"] = banks
        counts += f"; vocal bank {', '.join(banks)}"
    table = summary_markdown(summary, title=f"{candidate.name} on {args.data} ({args.subset}, {counts})")
    write_json(out_root / "summary.json", summary)
    write_text(out_root / "summary.md", table)
    print(table)
    if not args.quiet:
        print(f"results in {out_root}", file=sys.stderr)
    return results


def _vocal_banks(tracks: list[TrackInfo]) -> list[str]:
    """The ``vocal_bank`` digests named by the tracks' meta.json (corpus v2), sorted; [] for other data.

    The same seed renders other v2 songs from another build of the bank, so scores compare only where these
    agree."""
    banks: set[str] = set()
    for info in tracks:
        try:
            meta = load_meta(info)
        except UserError:  # an unreadable meta.json: the track has failed and says so already
            continue
        if meta and isinstance(meta.get("vocal_bank"), str):
            banks.add(meta["vocal_bank"])
    return sorted(banks)


def _candidate(args: argparse.Namespace) -> Candidate:
    if args.model is None:
        return baseline_candidate(args.baseline, args.stems)
    return model_candidate(args.model, overlap=args.overlap, **options.model_settings(args))
