"""Multitrack datasets on disk: MUSDB18HQ layout and generic "one folder per track, one file per stem".

MUSDB18HQ layout::

    ROOT/train/<track>/{mixture,vocals,drums,bass,other}.wav
    ROOT/test/<track>/...
    ROOT/valid/<track>/...          (optional; else the 14 official validation tracks are split off train)

Generic layout (e.g. MoisesDB-style exports): ``ROOT/<track>/<stem>.<ext>`` with any stem names, or the same
below ``ROOT/{train,valid,test}``. When ROOT has no subset folders, ROOT itself is the folder of tracks for
whichever subset is asked (pass different roots for training and validation).

Only headers are read when scanning (and cached, see :mod:`bsmamba2.data.cache`); audio is read lazily, in
segments, by :func:`read_stem`. Malformed tracks (missing stems, stems of different lengths or sample rates,
unreadable or empty files) are skipped with a warning that names the track and the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.data import cache
from bsmamba2.errors import AudioError, UserError

log = logging.getLogger(__name__)

STEMS = ("vocals", "drums", "bass", "other")
SUBSETS = ("train", "valid", "test")
MIXTURE = "mixture"
SAMPLE_RATE = 44100

# The official MUSDB18 validation split (sigsep musdb "validation_tracks"), taken out of train/ by name.
VALIDATION_TRACKS = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)


@dataclass(frozen=True)
class TrackInfo:
    """One multitrack song: stem files sharing one length and sample rate (header facts only).

    ``frames`` and ``sample_rate`` are the files' own; audio is resampled to 44.1 kHz when read.
    """

    name: str
    path: Path
    stems: dict[str, Path]
    mixture: Path | None
    frames: int
    sample_rate: int
    channels: int = field(default=2, compare=False)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class ScanResult:
    """What :func:`scan_tracks` found: usable tracks and ``(track name, reason)`` for each skipped one."""

    tracks: list[TrackInfo]
    skipped: list[tuple[str, str]]


# ----------------------------------------------------------------------------------------------- headers

_HEADERS: dict[str, audio.AudioInfo] = {}  # in-process cache: file_key -> header
_RESAMPLE_WARNED: set[Path] = set()


def _headers(files: list[Path], root: Path, progress: bool) -> dict[Path, audio.AudioInfo | AudioError]:
    """Headers of ``files`` (or the error reading each), through the memory and disk caches."""
    cdir = cache.cache_dir(root)
    disk = cache.load_json(cdir / "headers.json") if cdir else {}
    out: dict[Path, audio.AudioInfo | AudioError] = {}
    dirty = False
    todo = []
    for f in files:
        try:
            key = cache.file_key(f)
        except OSError as e:
            out[f] = AudioError(f"{f}: cannot read audio ({e.strerror or e})")
            continue
        if key in _HEADERS:
            out[f] = _HEADERS[key]
        elif key in disk:
            sr, ch, n = disk[key]
            out[f] = _HEADERS[key] = audio.AudioInfo(f, int(sr), int(ch), int(n))
        else:
            todo.append((f, key))
    bar = tqdm(
        todo, desc="scanning headers", unit="file", disable=not progress or len(todo) < 200, leave=False
    )
    for f, key in bar:
        try:
            h = audio.info(f)
        except AudioError as e:
            out[f] = e
            continue
        out[f] = _HEADERS[key] = h
        disk[key] = [h.sample_rate, h.channels, h.frames]
        dirty = True
    if dirty and cdir:
        cache.save_json(cdir / "headers.json", disk)
    return out


# ----------------------------------------------------------------------------------------------- scanning


def _subset_folder(root: Path, subset: str) -> tuple[Path, set[str] | None, set[str]]:
    """(folder to scan, names to keep or None for all, names to drop) for ``subset`` of ``root``."""
    if subset not in SUBSETS:
        raise UserError(f"unknown subset {subset!r} (choose from {', '.join(SUBSETS)})")
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder does not exist")
    has_subsets = any((root / s).is_dir() for s in SUBSETS)
    if not has_subsets:
        return root, None, set()
    valid_dir = root / "valid"
    if subset == "valid":
        if valid_dir.is_dir():
            return valid_dir, None, set()
        if (root / "train").is_dir():
            return root / "train", set(VALIDATION_TRACKS), set()
        raise UserError(f"{root}: no valid/ or train/ folder to take validation tracks from")
    folder = root / subset
    if not folder.is_dir():
        raise UserError(f"{root}: no {subset}/ folder")
    if subset == "train":
        drop = (
            {p.name for p in valid_dir.iterdir() if p.is_dir()}
            if valid_dir.is_dir()
            else set(VALIDATION_TRACKS)
        )
        return folder, None, drop
    return folder, None, set()


def _stem_files(track_dir: Path) -> tuple[dict[str, Path], str | None]:
    """{stem name: file} of one track folder (mixture included), or a reason it is malformed."""
    files: dict[str, Path] = {}
    for p in sorted(track_dir.iterdir()):
        if not audio.is_audio_file(p):
            continue
        name = p.stem
        if name in files:
            return {}, f"two files for stem {name!r} ({files[name].name}, {p.name})"
        files[name] = p
    if not files:
        return {}, "no audio files"
    return files, None


def scan_tracks(
    root: str | Path, subset: str = "train", stems: Sequence[str] | None = None, progress: bool = True
) -> ScanResult:
    """Find the tracks of ``subset`` under ``root`` (MUSDB18HQ rules) and check each one; see
    :func:`find_tracks`."""
    root = Path(root).expanduser()
    folder, keep, drop = _subset_folder(root, subset)
    return scan_folder(folder, root, stems, keep=keep, drop=drop, progress=progress)


def scan_folder(
    folder: Path,
    root: Path,
    stems: Sequence[str] | None = None,
    *,
    keep: set[str] | None = None,
    drop: set[str] | frozenset[str] = frozenset(),
    progress: bool = True,
) -> ScanResult:
    """Check every track folder of ``folder`` (named in ``keep`` if given, not in ``drop``); ``root`` is the
    dataset's root, where the header cache lives. UserError when no usable track is left."""
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if keep is not None:
        dirs = [d for d in dirs if d.name in keep]
    dirs = [d for d in dirs if d.name not in drop]
    if not dirs:
        what = "validation tracks (official names)" if keep is not None else "track folders"
        raise UserError(f"{folder}: no {what} found")

    skipped: list[tuple[str, str]] = []
    found: list[tuple[Path, dict[str, Path]]] = []
    for d in dirs:
        files, reason = _stem_files(d)
        if reason:
            skipped.append((d.name, reason))
        else:
            found.append((d, files))
    # Which stems every track must have: the caller's, else the MUSDB four when the folder only uses those
    # names (so a MUSDB track missing bass.wav is reported), else none (generic sets may vary per track).
    union = {s for _, files in found for s in files if s != MIXTURE}
    required = list(stems) if stems is not None else (list(STEMS) if union <= set(STEMS) else [])

    headers = _headers([f for _, files in found for f in files.values()], root, progress)
    tracks: list[TrackInfo] = []
    for d, files in found:
        info_or_reason = _check_track(d, files, required, headers)
        if isinstance(info_or_reason, str):
            skipped.append((d.name, info_or_reason))
        else:
            tracks.append(info_or_reason)
    for name, reason in skipped:
        log.warning("skipping track %r in %s: %s", name, folder, reason)
    if not tracks:
        first = f"; first: {skipped[0][0]!r}: {skipped[0][1]}" if skipped else ""
        raise UserError(f"{folder}: no usable tracks ({len(skipped)} skipped{first})")
    for t in tracks:
        if t.sample_rate != SAMPLE_RATE:
            for f in [*t.stems.values(), *([t.mixture] if t.mixture else [])]:
                _warn_resample(f, t.sample_rate)
    return ScanResult(sorted(tracks, key=lambda t: t.name), skipped)


def _check_track(
    d: Path,
    files: dict[str, Path],
    required: Sequence[str],
    headers: dict[Path, audio.AudioInfo | AudioError],
) -> TrackInfo | str:
    missing = [s for s in required if s not in files]
    if missing:
        return f"missing stem{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    stem_files = {s: p for s, p in files.items() if s != MIXTURE}
    if not stem_files:
        return "only a mixture, no stems"
    hs: dict[str, audio.AudioInfo] = {}
    for s, p in files.items():
        h = headers[p]
        if isinstance(h, AudioError):
            return str(h).replace(f"{p}: ", f"{p.name}: ", 1)
        if h.channels not in (1, 2):
            return f"{p.name}: has {h.channels} channels (mono or stereo expected)"
        hs[s] = h
    rates = {h.sample_rate for h in hs.values()}
    if len(rates) > 1:
        return (
            "stems have different sample rates ("
            + ", ".join(f"{s}: {h.sample_rate}" for s, h in hs.items())
            + ")"
        )
    lengths = {h.frames for h in hs.values()}
    if len(lengths) > 1:
        return (
            "stems have different lengths ("
            + ", ".join(f"{s}: {h.frames}" for s, h in hs.items())
            + " samples)"
        )
    h0 = next(iter(hs.values()))
    return TrackInfo(
        name=d.name,
        path=d,
        stems=stem_files,
        mixture=files.get(MIXTURE),
        frames=h0.frames,
        sample_rate=h0.sample_rate,
        channels=max(h.channels for h in hs.values()),
    )


def _warn_resample(path: Path, rate: int) -> None:
    if path not in _RESAMPLE_WARNED:
        _RESAMPLE_WARNED.add(path)
        log.warning("%s: sample rate %d Hz, resampled to %d Hz on load", path, rate, SAMPLE_RATE)


def find_tracks(
    root: str | Path, subset: str = "train", stems: Sequence[str] | None = None
) -> list[TrackInfo]:
    """The usable tracks of ``subset`` ("train", "valid" or "test") under ``root``, sorted by name.

    ``stems``: stems every track must have (tracks without them are skipped). None: the four MUSDB stems if
    the folder only uses those names, else any. Raises UserError if the folder is missing or holds no
    usable track; skipped tracks are logged as warnings naming the track and the reason.
    """
    return scan_tracks(root, subset, stems).tracks


# ----------------------------------------------------------------------------------------------- reading


def read_stem(
    info: TrackInfo, stem: str, start: int, frames: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Read ``frames`` samples (at ``sample_rate``) of one stem from ``start`` (also at ``sample_rate``).

    Returns float32 (2, frames): mono is duplicated, other file rates are resampled, reads past the end are
    zero-padded. ``stem`` may be "mixture" when the track has a mixture file.
    """
    path = info.mixture if stem == MIXTURE else info.stems.get(stem)
    if path is None:
        raise KeyError(f"track {info.name!r} has no stem {stem!r}")
    if info.sample_rate == sample_rate:
        x, _ = audio.read(path, start=start, frames=frames, channels=2)
    else:
        _warn_resample(path, info.sample_rate)
        ratio = info.sample_rate / sample_rate
        s0 = int(start * ratio)
        n = int(np.ceil(frames * ratio)) + 1
        x, _ = audio.read(path, start=s0, frames=n, sample_rate=sample_rate, channels=2)
    return fit_length(x, frames)


def fit_length(x: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad (C, N) to (C, frames)."""
    if x.shape[1] >= frames:
        return np.ascontiguousarray(x[:, :frames])
    return np.pad(x, ((0, 0), (0, frames - x.shape[1])))


def num_frames(info: TrackInfo, sample_rate: int = SAMPLE_RATE) -> int:
    """The track's length in samples at ``sample_rate``."""
    return (
        info.frames
        if info.sample_rate == sample_rate
        else int(round(info.frames * sample_rate / info.sample_rate))
    )


def load_track(
    info: TrackInfo, stems: Sequence[str] | None = None, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a whole track: ``(mixture (2, N), {stem: (2, N)})`` float32 at ``sample_rate``.

    ``stems``: which references to return (default all). The mixture is the mixture file if present, else
    the sum of *all* the track's stems (not only the requested ones).
    """
    want = list(info.stems) if stems is None else list(stems)
    missing = [s for s in want if s not in info.stems]
    if missing:
        raise UserError(f"track {info.name!r} has no stem {', '.join(missing)} (has {', '.join(info.stems)})")
    n = num_frames(info, sample_rate)
    refs = {s: read_stem(info, s, 0, n, sample_rate) for s in want}
    if info.mixture is not None:
        mix = read_stem(info, MIXTURE, 0, n, sample_rate)
    else:
        mix = np.zeros((2, n), np.float32)
        for s in info.stems:  # the synth corpus quantises stems so this sum is exact in any order
            mix += refs[s] if s in refs else read_stem(info, s, 0, n, sample_rate)
    return mix, refs


def load_meta(info: TrackInfo) -> dict[str, Any] | None:
    """The synthetic corpus's ``meta.json`` of this track (phrases, preset, seed, ...), or None."""
    p = info.path / "meta.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: unreadable meta.json ({e})") from None
    return data if isinstance(data, dict) else None
