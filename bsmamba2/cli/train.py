"""``bsmamba2 train``: registered here; the command itself is :mod:`bsmamba2.train.cli`.

The global ``-q`` becomes the config override ``progress=false`` (no step bar); everything else is passed on.
"""

from __future__ import annotations

import argparse

from bsmamba2.train import cli as train_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_cli.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.quiet:
        args.items = [*args.items, "progress=false"]
    return train_cli.run(args)
