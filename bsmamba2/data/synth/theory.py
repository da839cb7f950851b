"""Music theory for the composers: note names, scales, diatonic chords, chord voicing, progressions."""

from __future__ import annotations

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
          "mixolydian": (0, 2, 4, 5, 7, 9, 10)}  # fmt: skip
# Chord progressions as scale degrees (0 = tonic), one chord per bar (or per half bar when fast harmony).
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (5, 3, 0, 4), (1, 4, 0, 0), (0, 3, 5, 4), (0, 4, 3, 4),
              (3, 4, 2, 5), (0, 2, 3, 4), (0, 0, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 2, 6, 3), (0, 3, 6, 2), (5, 6, 0, 0)),
}  # fmt: skip
PROGRESSIONS["dorian"] = ((0, 3, 0, 3), (0, 6, 3, 0), (0, 1, 2, 3))
PROGRESSIONS["mixolydian"] = ((0, 6, 3, 0), (0, 3, 6, 3), (0, 4, 6, 3))


def scale_pitches(key: int, mode: str, lo: int, hi: int) -> np.ndarray:
    """All MIDI pitches of the scale within [lo, hi]."""
    pcs = {(key + s) % 12 for s in SCALES[mode]}
    return np.array([m for m in range(lo, hi + 1) if m % 12 in pcs])


def chord_pcs(key: int, mode: str, degree: int, seventh: bool) -> tuple[int, ...]:
    """Pitch classes of the diatonic chord on ``degree`` (stacked thirds), root first."""
    sc = SCALES[mode]
    idx = [degree, degree + 2, degree + 4] + ([degree + 6] if seventh else [])
    return tuple((key + sc[i % 7] + 12 * (i // 7)) % 12 for i in idx)


def voice_chord(pcs: tuple[int, ...], center: float, lo: int, hi: int) -> list[int]:
    """Place pitch classes near ``center`` within [lo, hi] (nearest octave each: smooth voice leading)."""
    out = []
    for pc in pcs:
        cands = [m for m in range(lo, hi + 1) if m % 12 == pc]
        out.append(min(cands, key=lambda m: abs(m - center)) if cands else lo + (pc - lo) % 12)
    return sorted(set(out))
