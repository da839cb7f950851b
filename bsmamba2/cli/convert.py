"""``bsmamba2 convert OFFICIAL.ckpt -o model.safetensors [--ema] [--stems vocals,...]``: an official
Lightning / MSST checkpoint to one of our safetensors model files."""

from __future__ import annotations

import argparse
from pathlib import Path

from bsmamba2.atomic import write_failure
from bsmamba2.checkpoints.loading import convert_checkpoint, load_weights
from bsmamba2.checkpoints.ours import save_model
from bsmamba2.errors import UserError
from bsmamba2.model import build_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bsmamba2 convert``."""
    parser.add_argument(
        "checkpoint", type=Path, help="official Lightning .ckpt, or an MSST bs_mamba2 checkpoint"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output .safetensors file (default: next to CHECKPOINT)",
    )
    parser.add_argument("--ema", action="store_true", help="take the EMA weights stored in the checkpoint")
    parser.add_argument(
        "--stems",
        default=None,
        help="comma-separated stem names, one per mask estimator (default: vocals; vocals,other; "
        "vocals,drums,bass,other for 1, 2, 4 stems)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, load strictly into our model, write safetensors; print a short summary."""
    src: Path = args.checkpoint
    out: Path = args.output if args.output is not None else src.with_suffix(".safetensors")
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"{out}: the output must be a .safetensors file")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out}: the output would overwrite the checkpoint; choose another name with -o")
    stems = args.stems.split(",") if args.stems is not None else None
    c = convert_checkpoint(src, ema=args.ema, stems=stems)
    model = build_model(c.cfg)
    load_weights(model, c.state, source=str(src))
    try:
        save_model(model, out, metadata={"converted_from": src.name, "converted_weights": c.weights})
    except OSError as e:  # an unwritable folder, a full disk: atomic_write has removed its temp file
        raise write_failure(out, e) from None
    cfg = c.cfg
    n_params = sum(t.numel() for t in c.state.values())
    print(
        f"read {src} ({c.kind}, {c.weights} weights{'; EMA weights also present' if c.has_ema and c.weights == 'raw' else ''})"
    )
    print(
        f"model: BSMamba2 dim {cfg.dim}, depth {cfg.depth}, "
        f"{'stereo' if cfg.audio_channels == 2 else 'mono'}, {cfg.num_bands} bands, n_fft {cfg.n_fft}, "
        f"hop {cfg.hop_length}, stems {','.join(cfg.stems)}; {n_params:,} parameters"
    )
    print(f"wrote {out}")
    print(f"separate with: bsmamba2 separate --model {out} song.wav")
    return 0
