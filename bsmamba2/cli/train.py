"""``bsmamba2 train CONFIG.yaml [key=value ...] [--resume DIR_OR_CKPT]``: a thin layer over ``train.loop``.

The global ``-q`` becomes the config override ``progress=false`` (no step bar).

bsmamba2 train configs/tiny.yaml data.root=/data/musdb18hq max_steps=100
bsmamba2 train paper data.root=/data/musdb18hq           # a bundled config by name (bsmamba2/configs/)
bsmamba2 train --resume runs/tiny max_steps=200          # CONFIG defaults to RUN_DIR/config.yaml
torchrun --nproc_per_node=2 -m bsmamba2 train configs/bsmamba2_paper.yaml data.root=/data/musdb18hq
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bsmamba2.atomic import os_failure
from bsmamba2.errors import UserError
from bsmamba2.train import ckpt
from bsmamba2.train.config import TrainConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="a YAML config file, or a bundled one by name (tiny, paper, roformer_paper, default_v2, ...), "
        "followed by dotted overrides, e.g. optim.lr=1e-4 model.dim=64",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR_OR_CKPT",
        help="continue from a run folder (its newest checkpoint) or a checkpoint folder/file; without "
        "CONFIG the run's own config.yaml is used and the run continues in that folder",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve_config(items: list[str], resume: str | None) -> TrainConfig:
    """CONFIG + overrides -> TrainConfig. With --resume and no CONFIG, the run's config.yaml and folder."""
    config = [x for x in items if "=" not in x]
    overrides = [x for x in items if "=" in x]
    if len(config) > 1:
        raise UserError(f"expected one config file, got {', '.join(config)} (overrides are key=value)")
    if config:
        return load_config(config[0], overrides)
    if resume is None:
        raise UserError("give a config file (e.g. configs/tiny.yaml) or --resume RUN_DIR")
    run_dir = ckpt.run_dir_of(ckpt.resolve_resume(resume))
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume {resume}: {run_dir / 'config.yaml'} not found; pass the config file too")
    # Continue in the folder the checkpoint lives in, wherever the run was started from.
    return load_config(run_dir / "config.yaml", [f"run_dir={run_dir}", *overrides])


def run(args: argparse.Namespace) -> int:
    items = [*args.items, "progress=false"] if getattr(args, "quiet", False) else list(args.items)
    cfg = resolve_config(items, args.resume)
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    from bsmamba2.train.loop import train  # torch.distributed, tensorboard: only when training

    try:
        train(cfg, resume=Path(args.resume) if args.resume else None)
    except OSError as e:  # the known writes say more (train.loop, train.ckpt); this catches the rest
        raise os_failure(e) from None
    return 0
