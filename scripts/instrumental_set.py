"""Turn recordings of songs with no voice into an evaluation set for vocal leakage (issue 14's third target).

A model that hears voices in lead instruments loses nothing on uSDR; what shows it is how loud its vocal
estimate is on music where nobody sings. This script writes each recording (or an excerpt of it) as one track
of a MUSDB18HQ-layout folder, ``OUT/test/<name>/mixture.wav`` with a silent ``vocals.wav`` beside it, so that
the ordinary evaluation scores it::

    python scripts/instrumental_set.py RECORDINGS... -o OUT [--seconds 60] [--limit N]
    bsmamba2 evaluate --model MODEL --data OUT --subset test --out OUT/eval

``RECORDINGS``: audio files or folders of them (searched recursively; anything soundfile reads: WAV, FLAC,
OGG Vorbis / Opus, MP3). ``--seconds S`` keeps S seconds from the middle of each recording (0: all of it).
The excerpt is written at the recording's own rate and channel count as 32-bit float (evaluate resamples to
44.1 kHz as it reads). The set is only as instrumental as its recordings: a choir or a spoken sample counts as
leakage. The leakage table of ``summary.md`` ("instrumental" rows) is the figure; the vocal uSDR that the
summary also prints means nothing here (its reference is silent).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2 import audio
from bsmamba2.errors import AudioError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"}


def recordings(paths: list[Path]) -> list[Path]:
    """The audio files named by ``paths`` (files, or folders searched recursively), in a stable order."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise SystemExit(f"instrumental_set: {p}: no such file or folder")
    return found


def track_name(path: Path, taken: set[str]) -> str:
    """A folder-safe, unique track name from the file's parent folder and stem."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{path.parent.name}-{path.stem}").strip("_") or "track"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def excerpt(x: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, int]:
    """(the middle ``seconds`` of x (C, N), its first sample); all of x when seconds is 0 or x is shorter."""
    n = x.shape[-1]
    want = int(round(seconds * rate))
    if seconds <= 0 or want >= n:
        return x, 0
    start = (n - want) // 2
    return x[:, start : start + want], start


def write_track(folder: Path, x: np.ndarray, rate: int, source: dict[str, object]) -> None:
    """``folder/mixture.wav`` (float), a silent ``vocals.wav`` of the same shape, and ``source.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "mixture.wav", x.T, rate, subtype="FLOAT")
    sf.write(folder / "vocals.wav", np.zeros_like(x.T), rate, subtype="PCM_16")  # exact zeros
    (folder / "source.json").write_text(json.dumps(source, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path, help="audio files or folders of them")
    ap.add_argument("-o", "--out", required=True, type=Path, help="output root (tracks go to OUT/test/)")
    ap.add_argument("--seconds", type=float, default=60.0, help="excerpt length from the middle (0: whole)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N recordings")
    ap.add_argument("--min-seconds", type=float, default=5.0, help="skip recordings shorter than this")
    a = ap.parse_args(argv)
    if a.seconds < 0:
        raise SystemExit(f"instrumental_set: --seconds must be at least 0, got {a.seconds}")
    files = recordings(a.recordings)[: a.limit]
    if not files:
        raise SystemExit("instrumental_set: no audio files found")
    test = a.out / "test"
    if test.exists() and any(test.iterdir()):
        raise SystemExit(f"instrumental_set: {test} is not empty; pick another --out")
    taken: set[str] = set()
    written = 0
    for f in files:
        try:
            x, rate = audio.read(f)
        except AudioError as e:
            print(f"skipped {f}: {e}", file=sys.stderr)
            continue
        why = (
            f"shorter than {a.min_seconds:g} s" if x.shape[-1] < a.min_seconds * rate
            else "NaN or infinite samples" if not np.isfinite(x).all()
            else "silent" if not np.any(x)
            else None
        )  # fmt: skip
        if why:
            print(f"skipped {f}: {why}", file=sys.stderr)
            continue
        y, start = excerpt(x, rate, a.seconds)
        name = track_name(f, taken)
        write_track(
            test / name, y, rate, {"source": str(f), "start_s": start / rate, "seconds": y.shape[-1] / rate}
        )
        written += 1
        print(f"{name}: {y.shape[-1] / rate:.1f} s from {start / rate:.1f} s of {f}")
    if not written:
        raise SystemExit("instrumental_set: no recording could be used")
    print(f"{written} tracks in {test}; next: bsmamba2 evaluate --model MODEL --data {a.out} --subset test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
