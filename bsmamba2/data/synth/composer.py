"""Procedural songs: tempo, key, sections, chord progressions, drum grooves and fills, bass lines, accompaniment
parts and the vocal line (phrases placed by a sparsity preset, melodies in key, syllables).

A :class:`Song` is pure data (times in seconds, pitches as MIDI numbers); :mod:`render` turns it into audio.
Everything is drawn from one NumPy Generator, so a song is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsmamba2.data.synth.voice import CONSONANTS, SINGERS, VOWELS

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

# Vocal phrase-length buckets (seconds) and the sparsity presets: P(bucket) and the instrumental gap range.
BUCKETS = {"1-2": (1.0, 2.0), "2-4": (2.0, 4.0), "4-8": (4.0, 8.0)}
PRESETS: dict[str, dict[str, Any]] = {
    "sparse": {"p": (0.6, 0.3, 0.1), "gap": (4.0, 12.0)},
    "medium": {"p": (0.34, 0.33, 0.33), "gap": (1.5, 5.0)},
    "dense": {"p": (0.1, 0.3, 0.6), "gap": (0.3, 1.5)},
}
PRESET_NAMES = ("sparse", "medium", "dense", "mixed", "instrumental")

# Drum grooves on a grid of 4 steps per beat: piece -> steps (velocity from the accent rules below).
STYLES: dict[str, dict[str, Any]] = {
    "rock": {"beats": 4, "tempo": (90, 150), "kick": (0, 8, 10), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "pop": {"beats": 4, "tempo": (88, 128), "kick": (0, 6, 8), "snare": (4, 12), "hat": tuple(range(16)), "swing": 0.0},
    "funk": {"beats": 4, "tempo": (92, 118), "kick": (0, 3, 6, 10), "snare": (4, 12), "ghost": (7, 9, 15), "hat": tuple(range(16)), "swing": 0.08},
    "disco": {"beats": 4, "tempo": (110, 128), "kick": (0, 4, 8, 12), "clap": (4, 12), "open_hat": (2, 6, 10, 14), "hat": (0, 4, 8, 12), "swing": 0.0},
    "halftime": {"beats": 4, "tempo": (130, 170), "kick": (0, 3, 10), "snare": (8,), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "hiphop": {"beats": 4, "tempo": (78, 98), "kick": (0, 7, 10), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.18},
    "ballad": {"beats": 4, "tempo": (62, 84), "kick": (0, 10), "rim": (4, 12), "ride": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "shuffle": {"beats": 4, "tempo": (84, 120), "kick": (0, 8), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.33},
    "waltz": {"beats": 3, "tempo": (84, 150), "kick": (0,), "snare": (4, 8), "hat": (0, 2, 4, 6, 8, 10), "swing": 0.0},
    "electro": {"beats": 4, "tempo": (118, 132), "kick": (0, 4, 8, 12), "clap": (4, 12), "hat": (2, 6, 10, 14), "shaker": tuple(range(16)), "swing": 0.0},
}  # fmt: skip


# How often each groove is picked (pop and rock feels dominate popular music; waltzes are rare).
STYLE_WEIGHTS = np.array([3, 3, 1.5, 1, 1, 1.5, 1.5, 1, 0.5, 1]) / 15.0  # in STYLES order


@dataclass
class Note:
    """A pitched event: onset and held duration in seconds, MIDI pitch, velocity in (0, 1]."""

    t: float
    dur: float
    midi: float
    vel: float


@dataclass
class Part:
    """An accompaniment or bass part: a synthesis engine + parameters, its notes, and its mix settings."""

    name: str
    engine: str
    params: dict[str, Any]
    notes: list[Note]
    pan: float = 0.0  # -1 (left) .. 1 (right)
    width: float = 0.0  # 0 mono .. 1: Haas-style widening
    gain_db: float = 0.0
    reverb: float = 0.1  # send level


@dataclass
class Syllable:
    """One sung note: onset consonant ('' for none), vowel, optional coda consonant ('' for none)."""

    t: float  # seconds from the phrase start
    dur: float
    midi: float
    onset: str
    vowel: str
    coda: str
    vel: float = 0.8


@dataclass
class Phrase:
    """A vocal phrase: the vocal stem is non-zero only inside [start, end) of some phrase."""

    start: float
    end: float
    bucket: str
    regime: str
    syllables: list[Syllable]
    harmony: list[Syllable] | None = None
    inhale: float = 0.0  # seconds of audible breath at the phrase start


@dataclass
class Song:
    seconds: float
    tempo: float
    beats_per_bar: int
    key: int  # pitch class of the tonic
    mode: str
    style: str
    swing: float
    sections: list[tuple[str, int, int]]  # (name, first bar, number of bars)
    chords: list[
        tuple[float, float, tuple[int, ...]]
    ]  # (start, end, MIDI pitches of the chord in root position)
    kit: dict[str, float]
    drums: list[tuple[str, float, float]]  # (piece, time, velocity)
    drum_gain_db: float
    bass: Part
    others: list[Part]
    singer: dict[str, Any]
    phrases: list[Phrase]
    preset: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_name(self) -> str:
        return f"{NOTE_NAMES[self.key]} {self.mode}"


# ----------------------------------------------------------------------------------------------- harmony


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


# ----------------------------------------------------------------------------------------------- the song


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


# ----------------------------------------------------------------------------------------------- drums


def make_kit(rng: np.random.Generator) -> dict[str, float]:
    """Tuning of one drum kit (each song gets its own)."""
    u = rng.uniform
    return {
        "kick_f0": u(120, 260), "kick_f1": u(42, 62), "kick_sweep": u(0.015, 0.05), "kick_len": u(0.3, 0.7),
        "kick_click": u(0.05, 0.5), "kick_drive": u(1.0, 3.0),
        "snare_f": u(160, 240), "snare_lo": u(800, 2500), "snare_decay": u(0.06, 0.18), "snare_snap": u(0.6, 1.2),
        "hat_decay": u(0.03, 0.09), "hat_lo": u(5000, 9000), "metal_f": u(280, 420), "tom_f": u(80, 120),
    }  # fmt: skip


def drum_track(
    style: str,
    sections: list[tuple[str, int, int]],
    bar: float,
    beats: int,
    tempo: float,
    rng: np.random.Generator,
) -> list[tuple[str, float, float]]:
    """Drum events (piece, time s, velocity): the style's groove with per-song variations, humanised timing,
    section-dependent density, fills before section changes and crashes on downbeats."""
    st = STYLES[style]
    steps = 4 * beats
    step = bar / steps
    groove: dict[str, list[int]] = {p: list(v) for p, v in st.items() if p in
                                    ("kick", "snare", "clap", "rim", "hat", "open_hat", "ride", "ghost", "shaker")}  # fmt: skip
    # per-song variations: an extra kick, a different timekeeper
    if rng.random() < 0.5:
        groove["kick"] = sorted(set(groove["kick"]) | {int(rng.choice([2, 7, 11, 14, 15])) % steps})
    if "hat" in groove and rng.random() < 0.25:
        groove["ride"] = groove.pop("hat")
    if rng.random() < 0.3 and "shaker" not in groove:
        groove["shaker"] = list(range(0, steps, 2))
    swing = float(st["swing"]) + (rng.uniform(0, 0.1) if rng.random() < 0.3 else 0.0)
    no_drum_intro = rng.random() < 0.4
    fill_kind = int(rng.integers(3))
    events: list[tuple[str, float, float]] = []

    def at(s: float, b: int) -> float:
        # swing delays the off-beat eighths (s % 4 == 2) or sixteenths (odd s)
        sw = swing * step if (s % 4 == 2 and swing > 0.2) or (s % 2 == 1 and 0 < swing <= 0.2) else 0.0
        return b * bar + s * step + sw + float(rng.normal(0, 0.004))

    for name, b0, nb in sections:
        for b in range(b0, b0 + nb):
            intro = name == "intro"
            if intro and no_drum_intro:
                continue
            last = b == b0 + nb - 1
            fill_from = steps - (8 if (last and rng.random() < 0.4) else 4) if last and not intro else steps
            if b == b0 and name in ("chorus", "bridge") and b > 0:
                events.append(("crash", b * bar + float(rng.normal(0, 0.003)), float(rng.uniform(0.7, 1.0))))
            for piece, ss in groove.items():
                if intro and piece not in ("hat", "ride", "shaker", "kick"):
                    continue
                if name == "bridge" and piece in ("snare", "clap") and rng.random() < 0.5:
                    continue
                for s in ss:
                    if s >= fill_from:
                        continue
                    accent = 1.0 if s % 4 == 0 else (0.8 if s % 2 == 0 else 0.6)
                    vel = {"ghost": 0.25, "hat": 0.55 * accent, "shaker": 0.35 * accent}.get(
                        piece, 0.9 * accent + 0.1
                    )
                    vel *= float(rng.uniform(0.85, 1.1)) * (1.1 if name == "chorus" else 1.0)
                    events.append(("snare" if piece == "ghost" else piece, at(s, b), min(vel, 1.0)))
            if name == "chorus" and "open_hat" not in groove and rng.random() < 0.5:
                events.append(("open_hat", at(steps - 2, b), 0.6))
            if fill_from < steps:  # a fill over the last beat(s) of the section
                for j, s in enumerate(range(fill_from, steps)):
                    cresc = 0.5 + 0.5 * j / max(1, steps - fill_from - 1)
                    if fill_kind == 0:  # tom run, high to low
                        piece = ("tom_hi", "tom_mid", "tom_lo")[min(2, 3 * j // max(1, steps - fill_from))]
                    elif fill_kind == 1:  # snare roll
                        piece = "snare"
                    else:  # snare / tom alternation on eighths
                        if s % 2:
                            continue
                        piece = "snare" if (s // 2) % 2 else "tom_mid"
                    events.append((piece, at(s, b), cresc))
                events.append(("kick", at(fill_from, b), 0.9))
    return events


# ----------------------------------------------------------------------------------------------- bass


def bass_part(
    style: str, chords: list[tuple[float, float, tuple[int, ...]]], beat: float, rng: np.random.Generator
) -> Part:
    """A bass line following the chord roots with one of several rhythmic patterns, on a random bass sound."""
    pattern = str(rng.choice(["root8", "pulse4", "sync", "walk", "octave", "sustain"]))
    if style in ("ballad",) and rng.random() < 0.6:
        pattern = "sustain"
    if style == "disco" and rng.random() < 0.6:
        pattern = "octave"
    notes: list[Note] = []
    offset = int(rng.choice([0, 12])) if rng.random() < 0.3 else 0
    for ci, (t0, t1, pitches) in enumerate(chords):
        root = pitches[0] + offset - 12 if pitches[0] + offset > 47 else pitches[0] + offset
        fifth = root + 7
        nxt = chords[ci + 1][2][0] if ci + 1 < len(chords) else root
        n_beats = max(1, int(round((t1 - t0) / beat)))
        if pattern == "sustain":
            notes.append(Note(t0, (t1 - t0) * 0.95, root, 0.8))
        elif pattern == "pulse4":
            for k in range(n_beats):
                notes.append(
                    Note(t0 + k * beat, beat * 0.8, root if k % 2 == 0 else fifth - 12 * (fifth > 50), 0.75)
                )
        elif pattern == "root8":
            for k in range(2 * n_beats):
                notes.append(Note(t0 + k * beat / 2, beat * 0.4, root, 0.9 if k % 2 == 0 else 0.65))
        elif pattern == "octave":
            for k in range(2 * n_beats):
                notes.append(Note(t0 + k * beat / 2, beat * 0.35, root + 12 * (k % 2), 0.8))
        elif pattern == "sync":
            for s in (0, 3, 6, 10, 14)[: 2 * n_beats]:
                if s / 4 < n_beats:
                    notes.append(
                        Note(
                            t0 + s * beat / 4, beat * 0.6, root if s != 10 else fifth - 12 * (fifth > 50), 0.8
                        )
                    )
        else:  # walk: root, chord tone, passing tone, chromatic approach to the next root
            line = [
                root,
                root + (4 if rng.random() < 0.5 else 3),
                fifth,
                nxt + (1 if rng.random() < 0.5 else -1),
            ]
            for k in range(n_beats):
                notes.append(Note(t0 + k * beat, beat * 0.85, line[k % 4], 0.75))
    engine = str(rng.choice(["subtractive", "fm", "pluck", "subtractive"]))
    return Part(
        "bass",
        engine,
        bass_params(engine, rng),
        notes,
        pan=0.0,
        gain_db=float(rng.uniform(-2, 2)),
        reverb=0.02,
    )


def bass_params(engine: str, rng: np.random.Generator) -> dict[str, Any]:
    u = rng.uniform
    if engine == "subtractive":
        return {"wave": str(rng.choice(["saw", "square", "pulse", "triangle"])), "voices": int(rng.choice([1, 1, 2])),
                "detune": u(3, 10), "cutoff": u(150, 700), "env_amount": u(0.5, 3.0), "filter_decay": u(0.05, 0.3),
                "reso": u(0, 1.5), "attack": 0.004, "decay": u(0.1, 0.5), "sustain": u(0.4, 0.9), "release": u(0.05, 0.15)}  # fmt: skip
    if engine == "fm":
        return {"ratio": float(rng.choice([0.5, 1.0, 2.0])), "index": u(0.8, 3.0), "index_end": u(0.1, 0.8),
                "index_decay": u(0.05, 0.3), "attack": 0.003, "decay": u(0.2, 0.8), "sustain": u(0.3, 0.8), "release": u(0.05, 0.12)}  # fmt: skip
    return {"brightness": u(0.3, 0.7), "decay": u(1.0, 3.0), "release": u(0.04, 0.1)}


# ----------------------------------------------------------------------------------------------- accompaniment


def _instrument(kind: str, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    """A randomised sound for an accompaniment role."""
    u = rng.uniform
    if kind == "pad":
        return "subtractive", {"wave": str(rng.choice(["saw", "saw", "square", "triangle"])), "voices": int(rng.integers(2, 5)),
                               "detune": u(6, 22), "cutoff": u(500, 2500), "env_amount": u(0, 0.8), "filter_decay": u(0.5, 2.0),
                               "reso": u(0, 0.8), "attack": u(0.15, 0.9), "decay": 1.0, "sustain": 1.0, "release": u(0.4, 1.2)}  # fmt: skip
    if kind == "strum":
        return "pluck", {"brightness": u(0.55, 1.0), "decay": u(0.8, 3.0), "release": u(0.05, 0.2)}
    if kind == "keys":
        if rng.random() < 0.5:  # FM electric piano
            return "fm", {"ratio": float(rng.choice([1.0, 1.0, 2.0, 3.0])), "index": u(1.0, 3.5), "index_end": u(0.1, 0.5),
                          "index_decay": u(0.1, 0.5), "attack": 0.002, "decay": u(0.6, 2.0), "sustain": u(0.0, 0.3), "release": u(0.1, 0.4)}  # fmt: skip
        k = 16
        harm = (1.0 / np.arange(1, k + 1) ** u(0.8, 1.6)) * rng.uniform(0.5, 1.0, k)
        return "additive", {"harmonics": harm.tolist(), "bright": u(1.0, 4.0), "tone_decay": u(0.1, 0.5), "cutoff": u(1500, 5000),
                            "attack": 0.002, "decay": u(0.5, 1.8), "sustain": u(0.0, 0.2), "release": u(0.1, 0.3), "hammer": u(0.0, 0.3)}  # fmt: skip
    if kind == "organ":
        harm = np.zeros(16)
        for h in (1, 2, 3, 4, 6, 8, 10, 12, 16):  # drawbar footages as harmonic numbers
            harm[h - 1] = u(0, 1) * (1.0 if h <= 4 else 0.5)
        harm[0] = max(harm[0], 0.6)
        return "additive", {"harmonics": harm.tolist(), "bright": 0.0, "tone_decay": 1.0, "cutoff": 8000.0,
                            "attack": 0.01, "decay": 1.0, "sustain": 1.0, "release": 0.06, "tremolo": u(0.0, 0.3), "tremolo_rate": u(5, 7)}  # fmt: skip
    if kind == "arp":
        if rng.random() < 0.5:
            return "fm", {"ratio": float(rng.choice([2.0, 3.5, 4.0, 1.41])), "index": u(0.5, 2.5), "index_end": 0.1, "index_decay": u(0.05, 0.3),
                          "attack": 0.002, "decay": u(0.15, 0.6), "sustain": 0.0, "release": u(0.05, 0.2)}  # fmt: skip
        return "subtractive", {"wave": str(rng.choice(["saw", "square", "pulse"])), "voices": 1, "detune": 0.0, "cutoff": u(300, 1200),
                               "env_amount": u(1.5, 4.0), "filter_decay": u(0.05, 0.25), "reso": u(0.2, 2.0), "attack": 0.002,
                               "decay": u(0.1, 0.4), "sustain": u(0.0, 0.3), "release": u(0.05, 0.2)}  # fmt: skip
    if kind == "lead":  # a sustained, vibrato-laden synth line: a deliberate "not a voice" confounder
        return "subtractive", {"wave": str(rng.choice(["saw", "square", "triangle", "pulse"])), "voices": int(rng.choice([1, 2])),
                               "detune": u(3, 9), "cutoff": u(800, 3000), "env_amount": u(0.0, 1.5), "filter_decay": u(0.1, 0.6),
                               "reso": u(0.0, 1.2), "attack": u(0.01, 0.08), "decay": 0.5, "sustain": u(0.6, 1.0), "release": u(0.08, 0.3),
                               "vibrato": u(10, 45), "vibrato_rate": u(4.5, 6.5), "vibrato_delay": u(0.1, 0.4)}  # fmt: skip
    if kind == "brass":
        return "subtractive", {"wave": "saw", "voices": int(rng.choice([2, 3])), "detune": u(4, 10), "cutoff": u(400, 900),
                               "env_amount": u(1.0, 2.5), "filter_decay": u(0.15, 0.4), "reso": 0.2, "attack": u(0.02, 0.06),
                               "decay": 0.3, "sustain": 0.7, "release": u(0.1, 0.2)}  # fmt: skip
    raise ValueError(kind)


def accompaniment(
    style: str,
    sections: list[tuple[str, int, int]],
    chords: list[tuple[float, float, tuple[int, ...]]],
    bar: float,
    beat: float,
    key: int,
    mode: str,
    phrases: list[Phrase],
    rng: np.random.Generator,
) -> list[Part]:
    """2-4 parts for the "other" stem (pads, strummed strings, keys, organ, arpeggios, a lead, brass stabs),
    each playing in a random subset of sections so the arrangement changes over the song."""
    pool = ["pad", "strum", "keys", "organ", "arp", "lead", "brass"]
    k = int(rng.integers(2, 5))
    kinds = list(rng.choice(pool, size=k, replace=False))
    if not {"pad", "strum", "keys", "organ"} & set(kinds):
        kinds[0] = str(rng.choice(["pad", "strum", "keys", "organ"]))  # always some harmony
    sec_of = _section_lookup(sections, bar)
    parts = []
    for i, kind in enumerate(kinds):
        engine, params = _instrument(kind, rng)
        plays = {name: bool(rng.random() < 0.8) for name in ("intro", "verse", "chorus", "bridge")}
        if i == 0:
            plays = dict.fromkeys(plays, True)
        notes: list[Note] = []
        lo, hi = (48, 76) if kind in ("pad", "organ", "keys", "brass") else (40, 76)
        center = float(rng.uniform(56, 66))
        rhythm = _comp_rhythm(rng)
        for t0, t1, pitches in chords:
            if not plays.get(sec_of(t0), True):
                continue
            pcs = tuple(p % 12 for p in pitches)
            if kind in ("pad", "organ"):
                for m in voice_chord(pcs, center, lo, hi):
                    notes.append(Note(t0, (t1 - t0) * 0.98, m, 0.7))
            elif kind in ("keys", "brass"):
                for on, ln in rhythm:
                    if t0 + on * beat < t1:
                        for m in voice_chord(pcs, center, lo, hi):
                            notes.append(
                                Note(
                                    t0 + on * beat + float(rng.normal(0, 0.004)),
                                    ln * beat,
                                    m,
                                    float(rng.uniform(0.55, 0.9)),
                                )
                            )
            elif kind == "strum":
                voicing = voice_chord(pcs + (pcs[0],), center - 5, 40, 72)
                voicing = sorted(set(voicing + [voicing[0] + 12]))
                spread = float(rng.uniform(0.008, 0.025))
                for j, (on, ln) in enumerate(rhythm):
                    if t0 + on * beat >= t1:
                        continue
                    order = voicing if j % 2 == 0 else voicing[::-1]  # down / up strokes
                    for q, m in enumerate(order):
                        notes.append(
                            Note(t0 + on * beat + q * spread, ln * beat, m, float(rng.uniform(0.5, 0.85)))
                        )
            elif kind == "arp":
                tones = voice_chord(pcs, center + 5, 52, 84)
                seq = tones + tones[-2:0:-1] if rng.random() < 0.5 else tones
                div = float(rng.choice([0.5, 0.25])) if beat > 0.45 else 0.5
                n = int(round((t1 - t0) / (beat * div)))
                for j in range(n):
                    notes.append(
                        Note(
                            t0 + j * beat * div, beat * div * 0.8, seq[j % len(seq)], 0.6 + 0.3 * (j % 2 == 0)
                        )
                    )
        if kind == "lead":
            notes = _lead_line(chords, beat, key, mode, phrases, rng)
        parts.append(Part(
            kind, engine, params, notes, pan=float(rng.uniform(-0.7, 0.7)),
            width=float(rng.uniform(0.2, 0.8)) if kind in ("pad", "strum", "organ") else 0.0,
            gain_db=float(rng.uniform(-4, 1)) - (3.0 if kind in ("pad", "organ") else 0.0),
            reverb=float(rng.uniform(0.05, 0.35)),
        ))  # fmt: skip
    return parts


def _section_lookup(sections: list[tuple[str, int, int]], bar: float) -> Any:
    def f(t: float) -> str:
        for name, b0, nb in sections:
            if b0 * bar <= t + 1e-6 < (b0 + nb) * bar:
                return name
        return sections[-1][0]

    return f


def _comp_rhythm(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A one-bar comping rhythm: (onset in beats, length in beats)."""
    options: list[list[tuple[float, float]]] = [
        [(0, 1), (1, 1), (2, 1), (3, 1)],
        [(1, 0.5), (3, 0.5)],
        [(0, 1.5), (1.5, 1), (3, 0.5), (3.5, 0.5)],
        [(0, 0.5), (0.5, 0.5), (1.5, 0.5), (2, 0.5), (2.5, 0.5), (3.5, 0.5)],
        [(0, 2), (2, 2)],
        [(0.5, 0.5), (1.5, 0.5), (2.5, 0.5), (3.5, 0.5)],
    ]
    return [(float(a), float(b)) for a, b in options[int(rng.integers(len(options)))]]


def _lead_line(chords: list[tuple[float, float, tuple[int, ...]]], beat: float, key: int, mode: str,
               phrases: list[Phrase], rng: np.random.Generator) -> list[Note]:  # fmt: skip
    """A synth melody that plays mostly *between* vocal phrases (answering lines), sometimes under them."""
    pitches = scale_pitches(key, mode, 60, 86)
    notes: list[Note] = []
    busy = [(p.start, p.end) for p in phrases]
    t = float(chords[0][0]) if chords else 0.0
    end = chords[-1][1] if chords else 0.0
    idx = len(pitches) // 2
    while t < end:
        during_voice = any(a <= t < b for a, b in busy)
        dur = beat * float(rng.choice([0.5, 1, 1, 2, 3]))
        if rng.random() < (0.15 if during_voice else 0.6):
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pitches) - 1))
            notes.append(Note(t, dur * 0.9, float(pitches[idx]), float(rng.uniform(0.5, 0.85))))
        t += dur
    return notes


# ----------------------------------------------------------------------------------------------- vocals


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
