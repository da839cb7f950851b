"""What a checkpoint format is: how to recognise its files and how to load one to our config and names.

A format module builds one :class:`Format`; ``bsmamba2.checkpoints.registry.FORMATS`` lists them in the order
they are tried. Loading always ends in a :class:`Loaded`: our ``ModelConfig`` and a state dict in our
parameter names, ready for ``load_weights``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import Tensor

from bsmamba2.checkpoints._text import head
from bsmamba2.config import ModelConfig


@dataclass
class Loaded:
    """A loaded checkpoint: our config, a state dict in our names, and what was done to get them."""

    cfg: ModelConfig
    state: dict[str, Tensor]
    kind: str  # "bsmamba2 model", "Lightning checkpoint", "state dict", ...
    weights: str = "raw"  # "raw" or "ema"
    prefix: str = ""  # the model's key prefix in the file ("model." for Lightning)
    ignored: list[str] = field(default_factory=list)  # non-model entries that were dropped
    has_ema: bool = False  # the file also holds EMA weights


class Loader(Protocol):
    def __call__(self, path: Path, *, ema: bool, stems: Sequence[str] | None) -> Loaded: ...


@dataclass(frozen=True)
class Format:
    """One checkpoint format.

    ``recognise(path, magic)`` says from the file's content (``magic`` = :func:`sniff_format`, plus any
    header the format reads itself) whether the file is one of its own. A file no format recognises goes to
    the format claiming its suffix, whose loader then names what is wrong. ``load(path, ema=, stems=)``
    raises CheckpointError (one line) for anything it cannot use; ``stems`` names the outputs where the file
    does not. ``foreign``: ``bsmamba2 convert`` accepts it (every format but our own).
    """

    name: str
    suffixes: tuple[str, ...]
    recognise: Callable[[Path, str], bool]
    load: Loader
    foreign: bool = True


def sniff_format(path: str | os.PathLike[str]) -> str:
    """What a file is, from its first bytes: "torch-zip", "safetensors", "torch-legacy" or "unknown"."""
    with open(path, "rb") as f:
        first = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if first[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch-zip"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(first) == 9 and first[8:9] == b"{" and 0 < int.from_bytes(first[:8], "little") <= size - 8:
        return "safetensors"
    if (
        first[:1] == b"\x80"
    ):  # a pickle protocol opcode: torch.save(..., _use_new_zipfile_serialization=False)
        return "torch-legacy"
    return "unknown"


def layout_problems(have: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps tensors of shapes ``have`` from filling slots of shapes ``want`` (empty if nothing):
    missing, unexpected and mis-shaped keys, each kind summarised with its first few names."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k} {have[k]} != {v}" for k, v in want.items() if k in have and have[k] != v]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({head(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({head(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches ({head(wrong)})")
    return problems
