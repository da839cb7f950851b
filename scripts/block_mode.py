"""Block mode vs full-length processing (issue 15, item 3), and a causal model's stream, on test songs.

    bsmamba2 synth /tmp/bm_corpus --train 1 --valid 1 --test 4 --seconds 20       # a few synthetic songs
    python scripts/block_mode.py --data /tmp/bm_corpus                             # the bundled BSMamba2
    python scripts/block_mode.py --data ROOT --model bsmamba2=A.safetensors --model bsroformer=B.safetensors \
        --model causal=C.safetensors --out DIR

For every model and test track (the ``test`` split of a MUSDB-layout folder), the vocals are estimated

- full length: the whole track in one pass (the reference the blocks are held against);
- in block mode (``bsmamba2.streaming.BlockStream``) at each ``--blocks`` length with ``--lookahead``: chunks
  of block + lookahead cross-faded over the lookahead; latency = block + lookahead;
- for a causal model, as a stream (``CausalStream``: 10 ms blocks; equals its offline output, latency
  n_fft − 1 samples).

It reports, averaged over tracks, the vocal uSDR against the true vocals, and "agreement", the uSDR of each
output against the model's own full-length output (how much block mode changes it). Writes DIR/block_mode.md
and DIR/block_mode.json; prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bsmamba2.api import DEFAULT_MODEL  # noqa: E402
from bsmamba2.apply import apply_model  # noqa: E402
from bsmamba2.atomic import atomic_write  # noqa: E402
from bsmamba2.checkpoints import load_model  # noqa: E402
from bsmamba2.data.musdb import find_tracks, load_track  # noqa: E402
from bsmamba2.evaluate.metrics import usdr  # noqa: E402
from bsmamba2.streaming import CausalStream  # noqa: E402
from bsmamba2.streaming.blocks import BlockStream  # noqa: E402


def block_mode(model: torch.nn.Module, mix: torch.Tensor, block: int, lookahead: int) -> torch.Tensor:
    """mix (c, n) -> stems (s, c, n) in block mode (any split of the pushes gives the same), minus the delay."""
    stream = BlockStream(model, block=block, lookahead=lookahead)
    y = torch.cat([stream.push(mix), stream.flush()], dim=-1)
    return y[..., stream.latency :]


def causal_stream(model: torch.nn.Module, mix: torch.Tensor) -> torch.Tensor:
    """mix (c, n) -> stems (s, c, n) through a causal stream of 441-sample blocks, minus the delay."""
    stream = CausalStream(model)
    pieces = [stream.push(mix[:, i : i + 441]) for i in range(0, mix.shape[-1], 441)]
    y = torch.cat([*pieces, stream.flush()], dim=-1)
    return y[..., stream.latency :]


def evaluate(label: str, path: Path, tracks: list[Any], blocks: list[float], lookahead: float) -> list[dict]:
    model = load_model(path)
    cfg = model.cfg
    rate = cfg.sample_rate
    vocals = cfg.stems.index("vocals")
    rows: dict[str, dict[str, Any]] = {}

    def add(
        mode: str, latency_ms: float, ref: np.ndarray, est: np.ndarray, full: np.ndarray, sec: float
    ) -> None:
        row = rows.setdefault(
            mode, {"model": label, "mixer": cfg.mixer, "causal": cfg.causal, "mode": mode, "latency_ms": latency_ms,
                   "usdr": [], "agreement": [], "seconds": 0.0},
        )  # fmt: skip
        row["usdr"].append(usdr(ref, est))
        row["agreement"].append(usdr(full, est))
        row["seconds"] += sec

    for info in tracks:
        mix_np, refs = load_track(info, ["vocals"], rate)
        ref = refs["vocals"]
        mix = torch.from_numpy(mix_np if cfg.audio_channels == 2 else mix_np.mean(0, keepdims=True))
        t0 = time.perf_counter()
        full = apply_model(model, mix, segment=mix.shape[-1], overlap=0.0, batch_size=1)[vocals].numpy()
        add("full length", float("nan"), ref, full, full, time.perf_counter() - t0)
        look = round(lookahead * rate)
        for b in blocks:
            t0 = time.perf_counter()
            est = block_mode(model, mix, round(b * rate), look)[vocals].numpy()
            latency = 1000 * (round(b * rate) + look - 1) / rate
            add(f"blocks {b:g} s + {lookahead:g} s", latency, ref, est, full, time.perf_counter() - t0)
        if cfg.causal:
            t0 = time.perf_counter()
            est = causal_stream(model, mix)[vocals].numpy()
            add("stream, 10 ms blocks", 1000 * cfg.latency / rate, ref, est, full, time.perf_counter() - t0)
    for row in rows.values():
        row["tracks"] = len(row["usdr"])
        row["usdr_mean"] = float(np.mean(row["usdr"]))
        row["agreement_mean"] = float(np.mean(row["agreement"]))
    return list(rows.values())


def table(rows: list[dict]) -> str:
    lines = [
        "| model | mixer | mode | latency (ms) | vocal uSDR (dB) | agreement with full length (dB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lat = "whole track" if np.isnan(r["latency_ms"]) else f"{r['latency_ms']:.1f}"
        agree = "-" if r["mode"] == "full length" else f"{r['agreement_mean']:.2f}"
        lines.append(
            f"| {r['model']} | {r['mixer']} | {r['mode']} | {lat} | {r['usdr_mean']:.2f} | {agree} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="MUSDB-layout folder (its test split is used)")
    parser.add_argument(
        "--model", action="append", default=[], help="LABEL=PATH (repeatable; default bundled)"
    )
    parser.add_argument("--blocks", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="block lengths, s")
    parser.add_argument("--lookahead", type=float, default=0.25, help="lookahead (and cross-fade), s")
    parser.add_argument("--limit", type=int, default=0, help="first N test tracks only (0 = all)")
    parser.add_argument("--out", type=Path, default=None, help="folder for block_mode.md / .json")
    args = parser.parse_args(argv)
    models = [m.split("=", 1) for m in args.model] or [["bsmamba2 (bundled)", str(DEFAULT_MODEL)]]
    tracks = find_tracks(args.data, "test", ["vocals"])
    tracks = tracks[: args.limit] if args.limit else tracks
    torch.set_grad_enabled(False)
    rows = [
        r for label, path in models for r in evaluate(label, Path(path), tracks, args.blocks, args.lookahead)
    ]
    md = table(rows) + f"\n\n{len(tracks)} test tracks of {args.data}; uSDR = mean over tracks.\n"
    print(md)
    if args.out is not None:
        with atomic_write(args.out / "block_mode.md") as tmp:
            tmp.write_text(md)
        with atomic_write(args.out / "block_mode.json") as tmp:
            tmp.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
