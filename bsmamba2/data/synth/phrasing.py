"""The vocal line: phrase windows placed by a sparsity preset, melodies in key, one syllable per note."""

from __future__ import annotations

from typing import Any

import numpy as np

from bsmamba2.data.synth.score import Phrase, Syllable
from bsmamba2.data.synth.theory import scale_pitches
from bsmamba2.data.synth.voice import CONSONANTS, VOWELS

# Vocal phrase-length buckets (seconds) and the sparsity presets: P(bucket) and the instrumental gap range.
BUCKETS = {"1-2": (1.0, 2.0), "2-4": (2.0, 4.0), "4-8": (4.0, 8.0)}
PRESETS: dict[str, dict[str, Any]] = {
    "sparse": {"p": (0.6, 0.3, 0.1), "gap": (4.0, 12.0)},
    "medium": {"p": (0.34, 0.33, 0.33), "gap": (1.5, 5.0)},
    "dense": {"p": (0.1, 0.3, 0.6), "gap": (0.3, 1.5)},
}
PRESET_NAMES = ("sparse", "medium", "dense", "mixed", "instrumental")


def plan_phrases(
    seconds: float, preset: str, beat: float, rng: np.random.Generator
) -> list[tuple[float, float, str, str]]:
    """Phrase windows (start, end, bucket, regime) for a sparsity preset; starts on the eighth-note grid,
    durations drawn uniformly inside their bucket, instrumental gaps between phrases."""
    if preset == "instrumental":
        return []
    names = list(BUCKETS)
    out: list[tuple[float, float, str, str]] = []
    regime = preset if preset != "mixed" else str(rng.choice(list(PRESETS)))
    guard = 0.05  # keep the last phrase clear of the end of the track
    # The first phrase starts after a short intro; capped so that any track of 1.35 s or more has a phrase.
    shortest = BUCKETS["1-2"][0]
    first_hi = min(PRESETS[regime]["gap"][1] * 0.5 + 0.5, max(0.3, seconds - guard - shortest - 1e-6))
    t = float(rng.uniform(0.3, first_hi))
    while True:
        if preset == "mixed":
            regime = str(rng.choice(list(PRESETS)))
        grid = beat / 2
        snapped = float(np.ceil(t / grid) * grid)
        # phrases start on the grid, except a first phrase that only fits in a short track off the grid
        t = snapped if out or seconds - guard - snapped >= BUCKETS["1-2"][0] else t
        bucket = str(rng.choice(names, p=PRESETS[regime]["p"]))
        room = seconds - guard - t
        fitting = [b for b in names if BUCKETS[b][0] <= room]
        if not fitting:
            break
        if bucket not in fitting:
            bucket = fitting[-1]
        lo, hi = BUCKETS[bucket]
        dur = float(rng.uniform(lo, min(hi, room)))
        out.append((t, t + dur, bucket, regime))
        t = t + dur + float(rng.uniform(*PRESETS[regime]["gap"]))
    return out


def vocal_line(
    seconds: float,
    preset: str,
    key: int,
    mode: str,
    chords: list[tuple[float, float, tuple[int, ...]]],
    beat: float,
    singer: dict[str, Any],
    rng: np.random.Generator,
) -> list[Phrase]:
    """Phrases with melodies in key (chord tones on strong beats, mostly stepwise), one syllable per note."""
    lo, hi = int(singer["low"]) + 2, int(singer["high"]) - 3
    pitches = scale_pitches(key, mode, lo, hi)
    chord_at = [(a, b, {p % 12 for p in c}) for a, b, c in chords]
    phrases = []
    idx = len(pitches) // 2
    harmony_song = rng.random() < 0.25
    for start, end, bucket, regime in plan_phrases(seconds, preset, beat, rng):
        length = end - start
        tail = min(0.25, 0.15 * length)  # release + reverb room at the end of the window
        inhale = float(rng.uniform(0.12, 0.25)) if rng.random() < 0.5 and length > 1.5 else 0.0
        t = inhale + 0.02
        sung_end = length - tail
        syl: list[Syllable] = []
        idx = int(np.clip(idx + rng.integers(-3, 4), 0, len(pitches) - 1))
        while t < sung_end - 0.08:
            dur = beat * float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0, 0.25 if beat > 0.5 else 0.5]))
            dur = min(dur, sung_end - t)
            absolute = start + t
            strong = abs((absolute / beat) - round(absolute / beat)) < 0.05
            tones = next((c for a, b, c in chord_at if a <= absolute < b), set())
            step = int(
                rng.choice(
                    [-3, -2, -1, -1, 0, 1, 1, 2, 3], p=[0.05, 0.12, 0.2, 0.1, 0.1, 0.1, 0.2, 0.08, 0.05]
                )
            )
            idx = int(np.clip(idx + step, 0, len(pitches) - 1))
            if strong and tones and pitches[idx] % 12 not in tones:
                near = [j for j in (idx - 1, idx + 1) if 0 <= j < len(pitches) and pitches[j] % 12 in tones]
                idx = near[0] if near else idx
            melisma = bool(syl) and rng.random() < 0.12
            syl.append(Syllable(
                t=t, dur=dur, midi=float(pitches[idx]),
                onset="" if melisma or rng.random() < 0.25 else str(rng.choice(CONSONANTS)),
                vowel=syl[-1].vowel if melisma else str(rng.choice(VOWELS)),
                coda=str(rng.choice(["n", "m", "s", "t", "l", "k"])) if rng.random() < 0.2 else "",
                vel=float(rng.uniform(0.65, 1.0)),
            ))  # fmt: skip
            t += dur + (float(rng.uniform(0.08, 0.25)) if rng.random() < 0.08 and length > 3 else 0.0)
        if syl:
            syl[-1].dur = max(syl[-1].dur, sung_end - syl[-1].t)  # hold the last note
        harmony = None
        if harmony_song and rng.random() < 0.6 and syl:
            harmony = []
            for s in syl:  # a diatonic third (two scale steps) above, clamped to the scale
                j = int(np.searchsorted(pitches, s.midi))
                m = float(pitches[min(j + 2, len(pitches) - 1)]) if j + 2 < len(pitches) else s.midi - 12 + 4
                harmony.append(Syllable(s.t, s.dur, m, s.onset, s.vowel, s.coda, s.vel * 0.7))
        phrases.append(Phrase(start, end, bucket, regime, syl, harmony, inhale))
    return phrases
