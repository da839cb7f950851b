"""The sparse-vocals study: BSMamba2 vs BS-RoFormer at matched size, same data, steps and seed (paper §V).

    python scripts/study.py params                                  # parameter counts of the two arms
    scripts/gpu_train.sh --configs study_bsmamba2,study_bsroformer  # train both (repeat until max_steps)
    python scripts/study.py eval --bsmamba2 A.safetensors --bsroformer B.safetensors --data ROOT --out DIR
    # on the device: scripts/gpu_train.sh --synth-only && python3 scripts/study.py eval ... --out /tmp/study --export $OUT

``eval`` runs, on the held-out test split of the synthetic corpus (``bsmamba2.evaluate`` does the work):

- uSDR (mean over tracks) and cSDR (median) of both models with 8 s non-overlapping chunks (paper Table II);
- the same at inference lengths 1, 2, 4, 8, 12, 16 s, both trained at 8 s (Table IV);
- vocal uSDR inside vocal regions of 1-2, 2-4, 4-8 s, regions taken from the corpus's meta.json (Table III);
- the mixture as the estimate (floor) and oracle ideal ratio masks (ceiling);
- a Fig. 2-style PNG: mel spectrograms of the true vocals, BSMamba2 (8 s chunks), BS-RoFormer (8 s chunks) and
  BS-RoFormer (1 s chunks) on the test excerpt with the most isolated vocal phrases.

It writes DIR/study.md (the tables to paste into RESULTS.md), DIR/study.json (every number, with the models'
steps and parameter counts, the configs' seeds and the corpus spec), DIR/fig2.png, and the evaluator's own
per-model folders. A CPU smoke test: ``--segments 1 2 --limit 1`` on a tiny corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bsmamba2.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARMS = {"bsmamba2": "configs/study_bsmamba2.yaml", "bsroformer": "configs/study_bsroformer.yaml"}
LABELS = {
    "bsmamba2": "BSMamba2",
    "bsroformer": "BS-RoFormer",
    "mixture": "mixture (floor)",
    "oracle-irm": "oracle IRM (ceiling)",
}
SEGMENTS = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0)
TRAIN_SEGMENT = 8.0


# ---- parameter counts ----------------------------------------------------------------------------------------
def count_params(config_yaml: str | Path) -> int:
    from bsmamba2.model import build_model
    from bsmamba2.train.config import load_config

    model = build_model(load_config(config_yaml).model)
    return sum(p.numel() for p in model.parameters())


def cmd_params(args: argparse.Namespace) -> int:
    counts = {name: count_params(REPO / path) for name, path in ARMS.items()}
    small = count_params(REPO / "configs/default_small.yaml")
    for name, n in counts.items():
        print(f"{LABELS[name]:<12} {n:>12,d} parameters ({ARMS[name]})")
    ratio = counts["bsroformer"] / counts["bsmamba2"]
    print(f"BS-RoFormer / BSMamba2 = {ratio:.4f} ({100 * (ratio - 1):+.2f} %)")
    print(f"default_small {small:>11,d} parameters ({small * 2 / 1e6:.1f} MB as bf16)")
    if abs(ratio - 1) > 0.05:
        print("parameter counts differ by more than 5 %", file=sys.stderr)
        return 1
    return 0


# ---- evaluation -------------------------------------------------------------------------------------------
def run_evaluate(argv: list[str]) -> dict[str, Any]:
    """``bsmamba2 evaluate ARGV`` in this process; returns its summary.json."""
    from bsmamba2.cli import evaluate as evaluate_cli

    parser = argparse.ArgumentParser(prog="bsmamba2 evaluate")
    evaluate_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    if evaluate_cli.run(args) != 0:
        raise UserError(f"bsmamba2 evaluate {' '.join(argv)} failed (see above)")
    return json.loads((args.out / "summary.json").read_text())


def model_info(path: Path) -> dict[str, Any]:
    """Parameter count, mixer, config and training step (if recorded) of a model file."""
    from bsmamba2.checkpoints import load_state, read_safetensors

    cfg, state = load_state(path)
    meta = read_safetensors(path)[0] if path.suffix == ".safetensors" else {}
    return {
        "file": str(path),
        "mixer": cfg.mixer,
        "params": int(sum(v.numel() for v in state.values())),
        "step": int(meta["step"]) if meta.get("step", "").isdigit() else None,
        "weights": meta.get("weights"),
        "config": cfg.to_dict(),
    }


def _run(summary: dict[str, Any], segment: float | None) -> dict[str, Any]:
    for r in summary["runs"]:
        if segment is None or r["segment"] is None or math.isclose(r["segment"], segment):
            return r
    raise KeyError(f"no run at segment {segment}")


def _f(x: Any) -> str:
    if isinstance(x, str):  # summary.json writes an infinite score as the string "inf"
        x = float(x)
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"


def tables(results: dict[str, Any], segments: Sequence[float]) -> str:
    """Markdown: main result, Table III (vocal-region duration), Table IV (input length)."""
    ev = results["evaluations"]
    models = [m for m in ("bsmamba2", "bsroformer") if m in ev]
    refs = [b for b in ("mixture", "oracle-irm") if b in ev]
    prov = results["provenance"]
    lines = [
        f"Test split: {prov['data']} ({prov['subset']}, {prov['tracks']} tracks); corpus {prov.get('corpus', {})}.",
        "Models: "
        + "; ".join(
            f"{LABELS[m]} {results['models'][m]['params']:,} parameters, step {results['models'][m]['step']}, "
            f"seed {prov['seeds'].get(m)}"
            for m in models
        )
        + ".",
        "",
        f"### Vocals, {TRAIN_SEGMENT:g} s chunks, no overlap (uSDR mean / cSDR median over tracks, dB)",
        "",
        "| model | params | uSDR | cSDR |",
        "|---|---|---|---|",
    ]
    for name in (*models, *refs):
        seg = TRAIN_SEGMENT if name in models else None
        a = _run(ev[name], seg)["stems"]["vocals"]
        params = f"{results['models'][name]['params'] / 1e6:.2f}M" if name in models else "–"
        lines.append(f"| {LABELS[name]} | {params} | {_f(a['usdr_mean'])} | {_f(a['csdr_median'])} |")
    buckets = ("1-2s", "2-4s", "4-8s")
    lines += [
        "",
        f"### Table III analogue: vocal uSDR by vocal-region duration ({TRAIN_SEGMENT:g} s chunks; mean over regions, dB; region count)",
        "",
        "| model | 1–2 s | 2–4 s | 4–8 s |",
        "|---|---|---|---|",
    ]
    for name in (*models, *refs):
        r = _run(ev[name], TRAIN_SEGMENT if name in models else None)
        vr = r.get("vocal_regions", {})
        cells = [
            f"{_f(vr.get(b, {}).get('usdr_mean'))} ({int(vr.get(b, {}).get('regions', 0))})" for b in buckets
        ]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    head = " | ".join(f"{s:g} s uSDR | {s:g} s cSDR" for s in segments)
    lines += [
        "",
        f"### Table IV analogue: vocals by inference input length (trained at {TRAIN_SEGMENT:g} s; uSDR mean / cSDR median, dB)",
        "",
        f"| model | {head} |",
        "|---|" + "---|" * (2 * len(segments)),
    ]
    for name in models:
        cells = []
        for s in segments:
            a = _run(ev[name], s)["stems"]["vocals"]
            cells += [_f(a["usdr_mean"]), _f(a["csdr_median"])]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    for name in refs:
        a = _run(ev[name], None)["stems"]["vocals"]
        lines.append(
            f"| {LABELS[name]} (any length) | "
            + " | ".join([_f(a["usdr_mean"]), _f(a["csdr_median"])] * len(segments))
            + " |"
        )
    return "\n".join(lines) + "\n"


# ---- Fig. 2 -----------------------------------------------------------------------------------------------
def pick_excerpt(
    data: Path, subset: str, seconds: float, track: str | None
) -> tuple[Any, float, list[tuple[float, float]]]:
    """(track, start s, phrases overlapping the window, clipped to it, in window time) of the test excerpt that
    best shows intermittent vocals: the window with the most phrases that start and end inside it, ties broken
    by the least vocal time (sparser)."""
    from bsmamba2.data import layouts, musdb

    best: tuple[tuple[int, float], Any, float, list[tuple[float, float]]] | None = None
    for info in layouts.find_tracks(data, subset, stems=("vocals",)):
        if track is not None and info.name != track:
            continue
        meta = musdb.load_meta(info) or {}
        phrases = [(float(p["start"]), float(p["end"])) for p in meta.get("phrases", [])]
        for start in np.arange(0.0, max(0.0, info.duration - seconds) + 1e-9, 0.5):
            inside = [(a - start, b - start) for a, b in phrases if a >= start and b <= start + seconds]
            key = (len(inside), -sum(b - a for a, b in inside))
            if best is None or key > best[0]:
                shown = [
                    (max(a, start) - start, min(b, start + seconds) - start)
                    for a, b in phrases
                    if b > start and a < start + seconds
                ]
                best = (key, info, float(start), shown)
    if best is None:
        raise UserError(
            f"no track {track!r} in {data} ({subset})" if track else f"no tracks in {data} ({subset})"
        )
    return best[1], best[2], best[3]


def figure2(
    paths: dict[str, Path],
    data: Path,
    subset: str,
    out: Path,
    seconds: float,
    track: str | None,
    device: str,
    precision: str,
) -> dict[str, Any]:
    import torch

    from bsmamba2.api import Separator
    from bsmamba2.apply import apply_model
    from bsmamba2.data import musdb
    from bsmamba2.evaluate.metrics import usdr
    from bsmamba2.plots import save_spectrograms

    info, start, phrases = pick_excerpt(data, subset, seconds, track)
    mix, refs = musdb.load_track(info, stems=("vocals",))
    a, b = round(start * musdb.SAMPLE_RATE), round((start + seconds) * musdb.SAMPLE_RATE)
    panels: dict[str, np.ndarray] = {"ground truth": refs["vocals"][:, a:b]}
    scores: dict[str, float] = {}
    runs = [("bsmamba2", TRAIN_SEGMENT), ("bsroformer", TRAIN_SEGMENT), ("bsroformer", 1.0)]
    for name, seg in runs:
        sep = Separator.from_pretrained(paths[name], device=device, precision=precision)
        est = apply_model(  # the whole track, as in the evaluation, then the excerpt
            sep.model,
            torch.from_numpy(mix),
            segment=round(seg * sep.sample_rate),
            overlap=0.0,
            batch_size=8,
            dtype=sep.dtype,
        ).numpy()[0][:, a:b]
        label = f"{LABELS[name]} ({seg:g} s chunks)"
        scores[label] = usdr(refs["vocals"][:, a:b], est)
        panels[f"{label}: excerpt uSDR {scores[label]:.2f} dB"] = est
    png = save_spectrograms(
        out / "fig2.png", panels, musdb.SAMPLE_RATE,
        title=f"{info.name}, {start:g}-{start + seconds:g} s (cyan: true vocal phrases)", regions=phrases,
    )  # fmt: skip
    return {
        "png": str(png),
        "track": info.name,
        "start": start,
        "seconds": seconds,
        "phrases": phrases,
        "excerpt_usdr": scores,
    }


def cmd_eval(args: argparse.Namespace) -> int:
    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    paths = {"bsmamba2": args.bsmamba2, "bsroformer": args.bsroformer}
    for name, p in paths.items():
        if not p.is_file():
            raise UserError(f"--{name} {p}: no such model file")
    models = {name: model_info(p) for name, p in paths.items()}
    for name, want in (("bsmamba2", "mamba2"), ("bsroformer", "roformer")):
        if models[name]["mixer"] != want:
            print(f"warning: --{name} {paths[name]} has mixer {models[name]['mixer']!r}", file=sys.stderr)
    segments = [float(s) for s in args.segments]
    if TRAIN_SEGMENT not in segments:
        segments = sorted({*segments, TRAIN_SEGMENT})
    common = ["--data", str(args.data), "--subset", args.subset]
    if args.limit:
        common += ["--limit", str(args.limit)]
    run_opts = ["--device", args.device, "--precision", args.precision, "--batch-size", str(args.batch_size)]
    ev: dict[str, Any] = {}
    for name, p in paths.items():
        seg_args = ["--segment", *[f"{s:g}" for s in segments]]
        ev[name] = run_evaluate(["--model", str(p), *common, *run_opts, *seg_args, "--out", str(out / name)])
    for base in ("mixture", "oracle-irm"):
        ev[base] = run_evaluate(["--baseline", base, *common, "--out", str(out / base)])
    corpus = args.data / "corpus.json"
    n_tracks = int(_run(ev["mixture"], None)["stems"]["vocals"]["tracks"])
    results: dict[str, Any] = {
        "models": models,
        "evaluations": ev,
        "provenance": {
            "data": str(args.data),
            "subset": args.subset,
            "tracks": n_tracks,
            "corpus": json.loads(corpus.read_text()) if corpus.is_file() else None,
            "seeds": {name: _config_seed(REPO / path) for name, path in ARMS.items()},
            "segments": segments,
            "precision": args.precision,
            "device": args.device,
        },
    }
    if not args.no_figure:
        results["figure2"] = figure2(
            paths, args.data, args.subset, out, args.fig_seconds, args.fig_track, args.device, args.precision
        )
    md = tables(results, segments)
    (out / "study.md").write_text(md)
    (out / "study.json").write_text(json.dumps(_finite(results), indent=1, allow_nan=False))
    print(md)
    if args.export is not None:  # the device returns <= 8 files, <= 2 folders down: send 4 files back
        import shutil
        import tarfile

        args.export.mkdir(parents=True, exist_ok=True)
        for name in ("study.md", "study.json", "fig2.png"):
            if (out / name).is_file():
                shutil.copy2(out / name, args.export / name)
        with tarfile.open(args.export / "study_full.tar.gz", "w:gz") as tar:
            tar.add(out, arcname=out.name)
    print(f"study written to {out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def _config_seed(path: Path) -> int | None:
    import yaml

    try:
        return int(yaml.safe_load(path.read_text()).get("seed", 42))
    except (OSError, ValueError, AttributeError):
        return None


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="BSMamba2 vs BS-RoFormer sparse-vocals study (paper Tables III, IV, Fig. 2)"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("params", help="parameter counts of the two study configs (must match within 5 %%)")
    e = sub.add_parser("eval", help="evaluate two trained models on the test split and write tables + figure")
    e.add_argument(
        "--bsmamba2",
        type=Path,
        required=True,
        help="BSMamba2 model file (e.g. study_bsmamba2.ema.safetensors)",
    )
    e.add_argument("--bsroformer", type=Path, required=True, help="BS-RoFormer model file")
    e.add_argument("--data", type=Path, required=True, help="corpus root (MUSDB18HQ layout with meta.json)")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--subset", default="test")
    e.add_argument(
        "--segments", type=float, nargs="+", default=list(SEGMENTS), help="inference lengths (s) for Table IV"
    )
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    e.add_argument("--batch-size", type=int, default=8, help="chunks per forward pass")
    e.add_argument("--limit", type=int, default=0, help="only the first N tracks (smoke tests)")
    e.add_argument("--fig-seconds", type=float, default=12.0, help="Fig. 2 excerpt length (default 12 s)")
    e.add_argument(
        "--fig-track", default=None, help="Fig. 2 track (default: the one with the most isolated phrases)"
    )
    e.add_argument("--no-figure", action="store_true")
    e.add_argument(
        "--export", type=Path, default=None,
        help="also copy study.md, study.json, fig2.png and a tarball of OUT here (e.g. $OUT on the device)",
    )  # fmt: skip
    args = p.parse_args(argv)
    try:
        return cmd_params(args) if args.cmd == "params" else cmd_eval(args)
    except UserError as err:
        print(f"study.py: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
