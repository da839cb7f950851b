"""Dataset layouts: how a root folder splits into train / valid / test tracks (``data.layout``).

Every caller that needs tracks asks a layout, by name::

    from bsmamba2.data import layouts
    tracks = layouts.find_tracks(root, "valid", stems=("vocals",), layout="musdb")

- ``musdb`` (the default): MUSDB18HQ as unzipped, ``ROOT/{train,test}/TRACK/STEM.wav``, with the 14 official
  validation tracks split off ``train/`` by name, or taken from ``ROOT/valid/`` when it exists (its tracks
  are then left out of training). A root without any subset folder is itself the folder of tracks for
  every subset.
- ``folders``: ``ROOT/TRACK/STEM.ext``, the root is the folder of tracks whatever the subset (no subset
  folders are looked for, no official split); pass separate roots for training and validation.

A new layout is a class with a ``tracks`` method, added to :data:`LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from bsmamba2.data import musdb
from bsmamba2.data.musdb import TrackInfo
from bsmamba2.errors import UserError


class Layout(Protocol):
    def tracks(self, root: Path, subset: str, stems: Sequence[str] | None) -> list[TrackInfo]:
        """The usable tracks of ``subset`` under ``root``, sorted by name; ``stems``: stems every track
        must have (None: the MUSDB four if the tracks only use those names, else any). UserError when the
        folder is missing or holds no usable track."""
        ...


class MusdbLayout:
    """MUSDB18HQ as unzipped (see the module docstring); :func:`bsmamba2.data.musdb.find_tracks`."""

    def tracks(self, root: Path, subset: str, stems: Sequence[str] | None) -> list[TrackInfo]:
        return musdb.find_tracks(root, subset, stems)


class FoldersLayout:
    """One folder of per-track stem folders, the same for every subset."""

    def tracks(self, root: Path, subset: str, stems: Sequence[str] | None) -> list[TrackInfo]:
        if subset not in musdb.SUBSETS:
            raise UserError(f"unknown subset {subset!r} (choose from {', '.join(musdb.SUBSETS)})")
        if not root.is_dir():
            raise UserError(f"{root}: dataset folder does not exist")
        return musdb.scan_folder(root, root, stems).tracks


LAYOUTS: dict[str, Layout] = {"musdb": MusdbLayout(), "folders": FoldersLayout()}
DEFAULT_LAYOUT = "musdb"


def get_layout(name: str) -> Layout:
    """The layout registered as ``name``; a one-line UserError naming the choices otherwise."""
    if name not in LAYOUTS:
        raise UserError(f"unknown dataset layout {name!r} (choose from {', '.join(LAYOUTS)})")
    return LAYOUTS[name]


def find_tracks(
    root: str | Path,
    subset: str = "train",
    stems: Sequence[str] | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> list[TrackInfo]:
    """The usable tracks of ``subset`` ("train", "valid" or "test") under ``root`` as ``layout`` reads it."""
    return get_layout(layout).tracks(Path(root).expanduser(), subset, stems)
