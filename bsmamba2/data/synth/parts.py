"""Bass lines and accompaniment parts (pads, strums, keys, organ, arpeggios, a lead line, brass stabs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bsmamba2.data.synth.score import Note, Part, Phrase
from bsmamba2.data.synth.theory import scale_pitches, voice_chord

# A sound chooser: rng -> (engine name, engine parameters); the renderer of each engine reads them.
Sound = Callable[[np.random.Generator], tuple[str, dict[str, Any]]]


def bass_part(
    style: str,
    chords: list[tuple[float, float, tuple[int, ...]]],
    beat: float,
    rng: np.random.Generator,
    sound: Sound | None = None,
) -> Part:
    """A bass line following the chord roots with one of several rhythmic patterns, on a random bass sound
    (``sound``; default: one of the oscillator engines)."""
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
    engine, params = (sound or _osc_bass)(rng)
    return Part(
        "bass",
        engine,
        params,
        notes,
        pan=0.0,
        gain_db=float(rng.uniform(-2, 2)),
        reverb=0.02,
    )


def _osc_bass(rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    engine = str(rng.choice(["subtractive", "fm", "pluck", "subtractive"]))
    return engine, bass_params(engine, rng)


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


ACCOMPANIMENT_ROLES = ("pad", "strum", "keys", "organ", "arp", "lead", "brass")


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
    instrument: Callable[[str, np.random.Generator], tuple[str, dict[str, Any]]] | None = None,
) -> list[Part]:
    """2-4 parts for the "other" stem (pads, strummed strings, keys, organ, arpeggios, a lead, brass stabs),
    each playing in a random subset of sections so the arrangement changes over the song. ``instrument(role,
    rng)`` picks each part's sound (default: the oscillator engines)."""
    instrument = instrument or _instrument
    k = int(rng.integers(2, 5))
    kinds = list(rng.choice(list(ACCOMPANIMENT_ROLES), size=k, replace=False))
    if not {"pad", "strum", "keys", "organ"} & set(kinds):
        kinds[0] = str(rng.choice(["pad", "strum", "keys", "organ"]))  # always some harmony
    sec_of = _section_lookup(sections, bar)
    parts = []
    for i, kind in enumerate(kinds):
        engine, params = instrument(kind, rng)
        plays = {name: bool(rng.random() < 0.8) for name in ("intro", "verse", "chorus", "bridge")}
        if i == 0:
            plays = dict.fromkeys(plays, True)
        notes: list[Note] = []
        lo, hi = (48, 76) if kind in ("pad", "organ", "keys", "brass") else (40, 76)
        center = float(rng.uniform(56, 66))
        rhythm = _comp_rhythm(rng)
        for t0, t1, pitches in chords:
            if plays.get(sec_of(t0), True):
                notes += _chord_notes(
                    kind, tuple(p % 12 for p in pitches), t0, t1, beat, center, (lo, hi), rhythm, rng
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


def _chord_notes(kind: str, pcs: tuple[int, ...], t0: float, t1: float, beat: float, center: float,
                 span: tuple[int, int], rhythm: list[tuple[float, float]], rng: np.random.Generator) -> list[Note]:  # fmt: skip
    """The notes of one accompaniment role over one chord [t0, t1) (pitch classes ``pcs``)."""
    lo, hi = span
    notes: list[Note] = []
    if kind in ("pad", "organ"):
        for m in voice_chord(pcs, center, lo, hi):
            notes.append(Note(t0, (t1 - t0) * 0.98, m, 0.7))
    elif kind in ("keys", "brass"):
        for on, ln in rhythm:
            if t0 + on * beat < t1:
                for m in voice_chord(pcs, center, lo, hi):
                    notes.append(Note(t0 + on * beat + float(rng.normal(0, 0.004)), ln * beat, m,
                                      float(rng.uniform(0.55, 0.9))))  # fmt: skip
    elif kind == "strum":
        voicing = voice_chord(pcs + (pcs[0],), center - 5, 40, 72)
        voicing = sorted(set(voicing + [voicing[0] + 12]))
        spread = float(rng.uniform(0.008, 0.025))
        for j, (on, ln) in enumerate(rhythm):
            if t0 + on * beat >= t1:
                continue
            order = voicing if j % 2 == 0 else voicing[::-1]  # down / up strokes
            for q, m in enumerate(order):
                notes.append(Note(t0 + on * beat + q * spread, ln * beat, m, float(rng.uniform(0.5, 0.85))))
    elif kind == "arp":
        tones = voice_chord(pcs, center + 5, 52, 84)
        seq = tones + tones[-2:0:-1] if rng.random() < 0.5 else tones
        div = float(rng.choice([0.5, 0.25])) if beat > 0.45 else 0.5
        n = int(round((t1 - t0) / (beat * div)))
        for j in range(n):
            notes.append(
                Note(t0 + j * beat * div, beat * div * 0.8, seq[j % len(seq)], 0.6 + 0.3 * (j % 2 == 0))
            )
    return notes


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
