"""The checkpoint formats bsmamba2 reads, in the order they are tried, and how a file finds its format.

Adding a format: write a module that builds a ``base.Format`` (a recogniser and a loader to our config and
names), and add it to :data:`FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from bsmamba2.checkpoints import official, ours
from bsmamba2.checkpoints.base import Format, sniff_format
from bsmamba2.errors import CheckpointError

# First match wins: our own safetensors files before any other safetensors file.
FORMATS: tuple[Format, ...] = (ours.FORMAT, official.SAFETENSORS_STATE_DICT, official.TORCH_CHECKPOINT)


def detect(path: Path) -> Format:
    """The format of the existing file ``path``: by content first, then by suffix.

    A file whose content no format recognises goes to the format claiming its suffix (``.safetensors``,
    ``.ckpt``, ...), whose loader then names the problem in one line; with no such suffix either, the
    file is refused here.
    """
    magic = sniff_format(path)
    for fmt in FORMATS:
        if fmt.recognise(path, magic):
            return fmt
    suffix = path.suffix.lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            return fmt
    names = "; ".join(f.name for f in FORMATS)
    raise CheckpointError(f"{path}: not a model file bsmamba2 can read (it reads: {names})")
