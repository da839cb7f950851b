"""Songs for the samples engine: the oscillator engine's form, grooves, bass lines and accompaniment, played on
General MIDI programs, plus expressive solo lines, and vocal phrases filled with lines of one bank session.

The song takes its key, mode and tempo from the session (transposed by up to two semitones: the vocal items
are resampled, which moves pitch and tempo together, so the tempo follows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsmamba2.data.synth.composer import song_form
from bsmamba2.data.synth.grooves import STYLE_WEIGHTS, STYLES, drum_track
from bsmamba2.data.synth.parts import accompaniment, bass_part
from bsmamba2.data.synth.phrasing import BUCKETS, plan_phrases
from bsmamba2.data.synth.samples.bank import Item, VocalBank
from bsmamba2.data.synth.score import Note, Part, Phrase
from bsmamba2.data.synth.theory import scale_pitches

# General MIDI programs (0-based) per role. No choir, voice or "voice"-named pads/leads (52-54, 85, 91, 94):
# a voice-like instrument in "other" would teach the model that a voice is not a voice.
ROLE_PROGRAMS: dict[str, tuple[int, ...]] = {
    "pad": (48, 49, 50, 51, 44, 88, 89, 90, 92, 95, 19),
    "strum": (24, 25, 26, 27, 28, 29, 30, 46, 105, 107),
    "keys": (0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12),
    "organ": (16, 17, 18, 19, 20, 21),
    "arp": (4, 5, 8, 9, 11, 12, 13, 45, 46, 98, 80, 81, 108),
    "lead": (80, 81, 82, 83, 84, 86, 87, 29, 30, 65, 66, 73, 40, 56, 71, 22),
    "brass": (61, 62, 63, 56, 57, 60, 59),
}
BASS_PROGRAMS = (32, 33, 33, 34, 34, 35, 36, 37, 38, 39, 43)
# Solo instruments that sing-like lines are played on: the deliberate "not a voice" confounders.
SOLO_PROGRAMS = (64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 77, 78, 79, 40, 41, 42, 110, 56, 57, 59, 60,
                 22, 21, 29, 30, 80, 81, 84, 87)  # fmt: skip
VOICE_PROGRAMS = frozenset({52, 53, 54, 85, 91, 94})


@dataclass
class VocalPhrase:
    """A vocal window [start, end) and what is sung in it (item ids, onsets in song seconds)."""

    start: float
    end: float
    bucket: str
    regime: str
    lines: list[tuple[str, float, float]]  # (item, onset, length: the item may be cut after a note)
    harmony: list[tuple[str, float, float]] = field(default_factory=list)
    doubled: bool = False
    backing: list[tuple[str, float, float]] = field(default_factory=list)  # (item, onset, length)
    breath: tuple[str, float] | None = None


@dataclass
class SampleSong:
    seconds: float
    tempo: float
    beats_per_bar: int
    key: int
    mode: str
    style: str
    sections: list[tuple[str, int, int]]
    chords: list[tuple[float, float, tuple[int, ...]]]
    kit: int  # index into the loaded kits
    drums: list[tuple[str, float, float]]
    bass: Part
    others: list[Part]
    session: str
    transpose: int
    phrases: list[VocalPhrase]
    preset: str


def _gm(role: str) -> Any:
    def choose(*args: Any) -> tuple[str, dict[str, Any]]:
        rng = args[-1]
        pool = ROLE_PROGRAMS[args[0]] if role == "" else BASS_PROGRAMS
        return "sf", {"program": int(rng.choice(pool))}

    return choose


def humanise(notes: list[Note], rng: np.random.Generator, timing: float, velocity: float) -> list[Note]:
    """Jitter onsets (s, Gaussian) and velocities (relative) of a part's notes."""
    dt = rng.normal(0, timing, len(notes))
    dv = rng.normal(1, velocity, len(notes))
    return [Note(max(0.0, n.t + float(a)), n.dur, n.midi, float(np.clip(n.vel * b, 0.05, 1.0)))
            for n, a, b in zip(notes, dt, dv)]  # fmt: skip


def solo_part(chords: list[tuple[float, float, tuple[int, ...]]], beat: float, key: int, mode: str,
              phrases: list[VocalPhrase], rng: np.random.Generator) -> Part:  # fmt: skip
    """A singing-like instrumental line (phrases of held, stepwise notes with rests) on a solo instrument,
    answering the voice in the gaps and sometimes playing under it; vibrato and scoops through the pitch wheel."""
    program = int(rng.choice(SOLO_PROGRAMS))
    lo = 48 if program in (42, 57, 58, 67, 70, 32) else 58
    pitches = scale_pitches(key, mode, lo, lo + 22)
    busy = [(p.start, p.end) for p in phrases]
    notes: list[Note] = []
    t, end = (chords[0][0], chords[-1][1]) if chords else (0.0, 0.0)
    idx = len(pitches) // 2
    overlap = float(rng.uniform(0.1, 0.5))
    while t < end:
        during = any(a <= t < b for a, b in busy)
        if rng.random() > (overlap if during else 0.75):
            t += beat * float(rng.choice([1, 2, 4]))
            continue
        for _ in range(int(rng.integers(3, 9))):  # one instrumental phrase
            dur = beat * float(rng.choice([0.5, 1, 1, 1.5, 2, 3]))
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pitches) - 1))
            notes.append(Note(t, dur * 0.95, float(pitches[idx]), float(rng.uniform(0.6, 0.95))))
            t += dur
        t += beat * float(rng.choice([1, 2, 3]))
    params = {"program": program, "vibrato_cents": float(rng.uniform(8, 45)), "vibrato_rate": float(rng.uniform(4.5, 6.5)),
              "vibrato_delay": float(rng.uniform(0.1, 0.4)), "scoop_p": float(rng.uniform(0.0, 0.5))}  # fmt: skip
    return Part("solo", "sf", params, notes, pan=float(rng.uniform(-0.5, 0.5)), gain_db=float(rng.uniform(-3, 1)),
                reverb=float(rng.uniform(0.1, 0.35)))  # fmt: skip


def unison_part(
    phrases: list[VocalPhrase], bank: VocalBank, transpose: int, rng: np.random.Generator
) -> Part:
    """An instrument doubling the sung melody (same notes and timing, in unison or an octave up), as pop
    arrangements often do: the model must tell the voice from an instrument on the very same pitches."""
    ratio = 2 ** (transpose / 12)
    octave = 12.0 if rng.random() < 0.4 else 0.0
    notes = []
    for ph in phrases:
        for item_id, at, length in ph.lines:
            for t, d, m in bank.items[item_id].notes:
                if t / ratio < length:
                    dur = min(d / ratio, length - t / ratio) * 0.95
                    notes.append(
                        Note(at + t / ratio, dur, m + transpose + octave, float(rng.uniform(0.55, 0.85)))
                    )
    program = int(rng.choice(SOLO_PROGRAMS + ROLE_PROGRAMS["keys"]))
    return Part("unison", "sf", {"program": program}, notes, pan=float(rng.uniform(-0.4, 0.4)),
                gain_db=float(rng.uniform(-6, -1)), reverb=float(rng.uniform(0.1, 0.3)))  # fmt: skip


def _bucket(seconds: float) -> str:
    return next((b for b, (lo, hi) in BUCKETS.items() if lo <= seconds < hi), "4-8")


def fill_phrases(windows: list[tuple[float, float, str, str]], bank: VocalBank, session: str, ratio: float,
                 beat: float, rng: np.random.Generator) -> list[VocalPhrase]:  # fmt: skip
    """Fill each planned window with lead lines of ``session`` (durations / ``ratio`` once transposed; a line
    may be cut after one of its notes), first notes on the eighth-note grid; the window shrinks to what was
    sung (+ a reverb tail) and is re-bucketed."""
    kinds = bank.by_session[session]
    harm = {i.of: i for i in kinds["harmony"]}
    out = []
    for start, end, _, regime in windows:
        tail = float(rng.uniform(0.1, 0.25))
        breath = (
            kinds["breath"][int(rng.integers(len(kinds["breath"])))]
            if kinds["breath"] and rng.random() < 0.4
            else None
        )
        t = start + (breath.dur / ratio * 0.8 if breath else 0.0)
        lines: list[tuple[str, float, float]] = []
        while (pick := _next_line(kinds["lead"], t, end - tail, ratio, beat / 2, rng)) is not None:
            lines.append(pick)
            t = pick[1] + pick[2] + float(rng.uniform(0.05, 0.5))
        if not lines:
            continue
        stop = min(end, lines[-1][1] + lines[-1][2] + tail)
        if stop - start < BUCKETS["1-2"][0]:
            continue
        ph = VocalPhrase(start, stop, _bucket(stop - start), regime, lines,
                         breath=(breath.id, start) if breath else None)  # fmt: skip
        ph.harmony = [(harm[i].id, at, ln) for i, at, ln in lines if i in harm]
        out.append(ph)
    return out


def _next_line(leads: list[Item], t: float, limit: float, ratio: float, grid: float,
               rng: np.random.Generator) -> tuple[str, float, float] | None:  # fmt: skip
    """A line starting at or after ``t`` (first note on the grid) that ends by ``limit``: preferably a whole
    line filling at least half the room, else a whole line, else the longest cut of a line that fits."""
    whole, cut = [], []
    for item in leads:
        at = _placed(t, item, ratio, grid)
        room = limit - at
        if item.dur / ratio <= room:
            whole.append((item.id, at, item.dur / ratio, room))
        elif fits := [c for c in _cuts(item, ratio) if c <= room]:
            cut.append((item.id, at, max(fits), room))
    big = [w for w in whole if w[2] >= 0.5 * w[3]]
    pool = big or whole or sorted(cut, key=lambda c: -c[2])[:3]
    if not pool:
        return None
    item_id, at, length, _ = pool[int(rng.integers(len(pool)))]
    return item_id, at, length


def _cuts(item: Item, ratio: float) -> list[float]:
    """Lengths (s, transposed) at which a line can end after one of its notes: before the next consonant, plus
    a 60 ms fade."""
    n = item.notes
    return [
        (max(n[j][0] + 0.1, min(n[j][0] + n[j][1], n[j + 1][0] - 0.12)) + 0.06) / ratio
        for j in range(len(n) - 1)
    ]


def _onset(item: Item, ratio: float) -> float:
    return item.notes[0][0] / ratio if item.notes else 0.0


def _placed(t: float, item: Item, ratio: float, grid: float) -> float:
    """Start time of ``item`` at or after ``t`` that puts its first note on the grid."""
    on = _onset(item, ratio)
    return float(np.ceil((t + on) / grid - 1e-9) * grid - on)


def arrange_song(
    seconds: float, preset: str, rng: np.random.Generator, bank: VocalBank, n_kits: int
) -> SampleSong:
    """Draw a whole song of ``seconds`` with vocal sparsity ``preset`` on one session of ``bank``."""
    session = bank.sessions[bank.singable[int(rng.integers(len(bank.singable)))]]
    transpose = int(rng.choice([-2, -1, 0, 0, 1, 2]))
    ratio = 2 ** (transpose / 12)
    tempo = session.tempo * ratio
    fits = [s for s in STYLES if STYLES[s]["tempo"][0] * 0.9 <= tempo <= STYLES[s]["tempo"][1] * 1.1]
    w = np.array([STYLE_WEIGHTS[list(STYLES).index(s)] for s in fits]) if fits else STYLE_WEIGHTS
    style = str(rng.choice(fits or list(STYLES), p=w / w.sum()))
    beats = int(STYLES[style]["beats"])
    key, mode = (session.key + transpose) % 12, session.mode
    beat = 60.0 / tempo
    bar = beat * beats
    sections, chords = song_form(seconds, tempo, beats, key, mode, rng)
    drums = drum_track(style, sections, bar, beats, tempo, rng)
    drums = [(p, t, float(np.clip(v * rng.normal(1, 0.06), 0.05, 1.0))) for p, t, v in drums]
    bass = bass_part(style, chords, beat, rng, sound=_gm("bass"))
    bass.notes = humanise(bass.notes, rng, 0.006, 0.08)
    phrases = fill_phrases(plan_phrases(seconds, preset, beat, rng), bank, session.id, ratio, beat, rng)
    stand_ins = [Phrase(p.start, p.end, p.bucket, p.regime, []) for p in phrases]
    others = accompaniment(style, sections, chords, bar, beat, key, mode, stand_ins, rng, instrument=_gm(""))
    for part in others:
        part.notes = humanise(part.notes, rng, 0.008, 0.1)
    if rng.random() < 0.6:
        others.append(solo_part(chords, beat, key, mode, phrases, rng))
    if phrases and rng.random() < 0.2:
        others.append(unison_part(phrases, bank, transpose, rng))
    _decorate(phrases, bank, session.id, chords, transpose, rng)
    return SampleSong(seconds, tempo, beats, key, mode, style, sections, chords, int(rng.integers(n_kits)), drums,
                      bass, others, session.id, transpose, phrases, preset)  # fmt: skip


def _decorate(phrases: list[VocalPhrase], bank: VocalBank, session: str,
              chords: list[tuple[float, float, tuple[int, ...]]], transpose: int, rng: np.random.Generator) -> None:  # fmt: skip
    """Song-level vocal arrangement: which phrases are doubled, keep their harmony, get backing vowels."""
    kinds = bank.by_session[session]
    harmony_song, double_song = rng.random() < 0.4, rng.random() < 0.35
    backing_song = bool(kinds["backing"]) and rng.random() < 0.6
    for ph in phrases:
        if not (harmony_song and rng.random() < 0.7):
            ph.harmony = []
        ph.doubled = double_song and rng.random() < 0.8
        if not (backing_song and rng.random() < 0.5):
            continue
        for t0, t1, pitches in chords:
            a, b = max(t0, ph.start), min(t1, ph.end - 0.15)
            if b - a < 0.4:
                continue
            pcs = {(p + 0) % 12 for p in pitches}
            tones = [i for i in kinds["backing"] if (int(i.pitch) + transpose) % 12 in pcs]
            for i in list(rng.permutation(len(tones)))[: int(rng.integers(2, 4))]:
                item = tones[int(i)]
                ph.backing.append((item.id, a, min(b - a, item.dur / 2 ** (transpose / 12))))
