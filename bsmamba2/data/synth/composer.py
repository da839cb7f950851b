"""Procedural songs: tempo, key, sections, chord progressions, drum grooves and fills, bass lines, accompaniment
parts and the vocal line (phrases placed by a sparsity preset, melodies in key, syllables).

The parts come from :mod:`.theory` (scales, chords), :mod:`.grooves` (drums), :mod:`.parts` (bass and
accompaniment) and :mod:`.phrasing` (the vocal line). A :class:`~.score.Song` is pure data; :mod:`.render`
turns it into audio. Everything is drawn from one NumPy Generator, so a song is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

from bsmamba2.data.synth.grooves import STYLE_WEIGHTS, STYLES, drum_track, make_kit
from bsmamba2.data.synth.parts import accompaniment, bass_part
from bsmamba2.data.synth.phrasing import PRESET_NAMES, vocal_line
from bsmamba2.data.synth.score import Song
from bsmamba2.data.synth.theory import PROGRESSIONS, chord_pcs
from bsmamba2.data.synth.voice import SINGERS


def compose(seconds: float, preset: str, rng: np.random.Generator) -> Song:
    """Draw a whole song of ``seconds`` with vocal sparsity ``preset`` (one of PRESET_NAMES)."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}")
    style = str(rng.choice(list(STYLES), p=STYLE_WEIGHTS))
    st = STYLES[style]
    tempo = float(rng.uniform(*st["tempo"]))
    beats = int(st["beats"])
    mode = str(rng.choice(["major", "minor", "major", "minor", "dorian", "mixolydian"]))
    key = int(rng.integers(12))
    beat = 60.0 / tempo
    bar = beat * beats
    sections, chords = song_form(seconds, tempo, beats, key, mode, rng)
    kit = make_kit(rng)
    drums = drum_track(style, sections, bar, beats, tempo, rng)
    bass = bass_part(style, chords, beat, rng)
    singer = dict(SINGERS[int(rng.integers(len(SINGERS)))])
    singer["formant_scale"] = float(singer["formant_scale"] * rng.uniform(0.96, 1.04))
    singer["vibrato_rate"] = float(rng.uniform(4.8, 6.6))
    singer["vibrato_cents"] = float(singer["vibrato_cents"] * rng.uniform(0.6, 1.3))
    phrases = vocal_line(seconds, preset, key, mode, chords, beat, singer, rng)
    others = accompaniment(style, sections, chords, bar, beat, key, mode, phrases, rng)
    return Song(
        seconds=seconds, tempo=tempo, beats_per_bar=beats, key=key, mode=mode, style=style,
        swing=float(st["swing"]), sections=sections, chords=chords, kit=kit, drums=drums,
        drum_gain_db=float(rng.uniform(-2, 2)), bass=bass, others=others, singer=singer, phrases=phrases,
        preset=preset,
    )  # fmt: skip


def song_form(
    seconds: float, tempo: float, beats: int, key: int, mode: str, rng: np.random.Generator
) -> tuple[list[tuple[str, int, int]], list[tuple[float, float, tuple[int, ...]]]]:
    """Sections (name, first bar, bars) to cover ``seconds``, and the chords (start s, end s, MIDI pitches in
    root position, roots in C2..B2) of each section's progression, one per bar or per half bar."""
    beat = 60.0 / tempo
    bar = beat * beats
    n_bars = int(np.ceil(seconds / bar)) + 1

    # Sections: an optional intro, then verse/chorus blocks with an occasional bridge; 4 or 8 bars each.
    sections: list[tuple[str, int, int]] = []
    b = 0
    order = ["intro"] if rng.random() < 0.7 else []
    order += ["verse", "chorus", "verse", "chorus", "bridge", "chorus", "verse", "chorus"] * 4
    for name in order:
        if b >= n_bars:
            break
        length = 4 if name in ("intro", "bridge") else int(rng.choice([4, 8, 8]))
        sections.append((name, b, length))
        b += length
    prog_for = {
        name: PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
        for name in ("intro", "verse", "chorus", "bridge")
    }
    sevenths = rng.random() < 0.35
    fast_harmony = rng.random() < 0.2 and tempo < 110  # two chords per bar

    chords: list[tuple[float, float, tuple[int, ...]]] = []
    for name, b0, nb in sections:
        prog = prog_for[name]
        steps = nb * (2 if fast_harmony else 1)
        step_len = bar / (2 if fast_harmony else 1)
        for j in range(steps):
            pcs = chord_pcs(key, mode, prog[j % len(prog)], sevenths)
            root = 36 + (pcs[0] - 36) % 12  # C2..B2
            pitches = tuple(root + (pc - pcs[0]) % 12 for pc in pcs)
            t0 = b0 * bar + j * step_len
            chords.append((t0, t0 + step_len, pitches))

    return sections, chords
