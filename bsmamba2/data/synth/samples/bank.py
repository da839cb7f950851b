"""The vocal phrase bank: sung lines, harmonies, backing "oohs" and breaths, rendered once on a CPU machine
(:mod:`.singing`) and read by the samples engine anywhere (numpy + soundfile only).

Layout::

    vocals/index.json         {"version": 1, "sample_rate": 24000, "sessions": [...], "items": [...]}
    vocals/<session>/<id>.ogg Opus in OGG, mono

A *session* is one singer in one key, mode and tempo (a song uses one session). Its items have a ``kind``:
``lead`` (a sung line; ``notes`` = [[onset s, duration s, MIDI pitch], ...] from the item start), ``harmony``
(the same line a third or sixth away, same timing; ``of`` = the lead's id), ``backing`` (one held vowel at
MIDI ``pitch``) and ``breath`` (an inhale).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bsmamba2 import audio
from bsmamba2.data.synth.samples.assets import BANK_HINT, AssetError

BANK_VERSION = 1
KINDS = ("lead", "harmony", "backing", "breath")


@dataclass(frozen=True)
class Session:
    id: str
    key: int  # pitch class of the tonic
    mode: str
    tempo: float
    voice: str  # description of the timbre (voice names and blend weights)
    lang: str


@dataclass(frozen=True)
class Item:
    id: str
    session: str
    kind: str
    file: str
    dur: float
    notes: tuple[tuple[float, float, float], ...] = ()
    pitch: float = 0.0
    of: str = ""


class VocalBank:
    """An opened bank: sessions, their items by kind, and decoded audio (cached)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.json"
        try:
            raw = index.read_bytes()
            data = json.loads(raw)
            if data.get("version") != BANK_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {BANK_VERSION}")
            self.sample_rate = int(data["sample_rate"])
            self.sessions = {s["id"]: Session(**s) for s in data["sessions"]}
            items = [_item(d) for d in data["items"]]
        except FileNotFoundError:
            raise AssetError(f"no vocal bank at {index}: {BANK_HINT}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AssetError(f"{index}: not a usable vocal bank ({e}): {BANK_HINT}") from None
        # names this bank in each track's meta.json: a rebuild on another CPU can differ in its phrases (Kokoro's
        # and WORLD's float results steer the build's random draws), and so render other songs from one seed
        self.digest = hashlib.sha256(raw).hexdigest()
        self.items = {i.id: i for i in items}
        self.by_session: dict[str, dict[str, list[Item]]] = {s: {k: [] for k in KINDS} for s in self.sessions}
        for i in items:
            if i.session not in self.by_session or i.kind not in KINDS:
                raise AssetError(f"{index}: item {i.id} has an unknown session or kind: {BANK_HINT}")
            self.by_session[i.session][i.kind].append(i)
        self.singable = [s for s in self.sessions if self.by_session[s]["lead"]]
        if not self.singable:
            raise AssetError(f"{index}: the bank has no sung lines: {BANK_HINT}")
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def audio(self, item: Item, sample_rate: int) -> np.ndarray:
        """The item's audio, mono float32 at ``sample_rate`` (decoded and resampled once per process)."""
        key = (item.id, sample_rate)
        if key not in self._cache:
            path = self.folder / item.file
            try:
                x, sr = sf.read(str(path), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, OSError, RuntimeError) as e:
                raise AssetError(f"{path}: unreadable vocal bank file ({e}): {BANK_HINT}") from None
            self._cache[key] = audio.resample(x.mean(axis=1)[None], sr, sample_rate)[0]
        return self._cache[key]


def _item(d: dict[str, Any]) -> Item:
    return Item(str(d["id"]), str(d["session"]), str(d["kind"]), str(d["file"]), float(d["dur"]),
                tuple((float(a), float(b), float(c)) for a, b, c in d.get("notes", ())), float(d.get("pitch", 0.0)),
                str(d.get("of", "")))  # fmt: skip


_OPEN: dict[str, VocalBank] = {}


def open_bank(folder: str | Path) -> VocalBank:
    """The process-wide :class:`VocalBank` of ``folder``."""
    index = Path(folder) / "index.json"
    st = index.stat() if index.is_file() else None
    key = f"{index.resolve()}:{st.st_mtime_ns if st else 0}:{st.st_size if st else 0}"  # a rewritten bank reopens
    if key not in _OPEN:
        _OPEN[key] = VocalBank(folder)
    return _OPEN[key]
