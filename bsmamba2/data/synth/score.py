"""The score: a composed song as pure data (times in seconds, pitches as MIDI numbers) that a renderer
turns into audio."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bsmamba2.data.synth.theory import NOTE_NAMES


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
