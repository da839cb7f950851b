"""General MIDI instruments from a SoundFont (sf2/sf3) through tinysoundfont.

tinysoundfont is imported lazily (it is behind the ``[synth]`` extra). One SoundFont is loaded once per
process and shared by every part of every song it renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bsmamba2.data.synth.samples.assets import SOUNDFONT_HINT, TSF_HINT, AssetError
from bsmamba2.data.synth.score import Note

BEND_BLOCK = 128  # samples between pitch-wheel updates of a bent part (2.9 ms at 44.1 kHz)
BEND_RANGE = 2.0  # semitones of pitch-wheel travel either way

_LOADED: dict[tuple[str, int], SoundFontPlayer] = {}


def _tsf() -> Any:
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError:
        raise AssetError(f"the samples engine needs tinysoundfont: {TSF_HINT}") from None
    return _tinysoundfont


class SoundFontPlayer:
    """Renders note lists on General MIDI programs of one SoundFont at one sample rate."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        tsf = _tsf()
        self.path = Path(path)
        try:
            self.font = tsf.SoundFont(str(self.path))
        except (RuntimeError, OSError):
            raise AssetError(f"{self.path}: not a readable SoundFont (sf2/sf3): {SOUNDFONT_HINT}") from None
        if self.font.get_preset_count() == 0:
            raise AssetError(f"{self.path}: SoundFont has no presets: {SOUNDFONT_HINT}")
        self.font.set_output(tsf.OutputMode.StereoInterleaved, sample_rate, 0.0)
        self.font.set_max_voices(256)
        self.sample_rate = sample_rate
        self._flush = memoryview(bytearray(8 * int(0.05 * sample_rate)))

    @classmethod
    def shared(cls, path: str | Path, sample_rate: int) -> SoundFontPlayer:
        """The process-wide player of ``path`` (loading an sf3 decodes every sample: do it once)."""
        st = Path(path).stat() if Path(path).is_file() else None
        key = (f"{Path(path).resolve()}:{st.st_mtime_ns if st else 0}:{st.st_size if st else 0}", sample_rate)
        if key not in _LOADED:
            _LOADED[key] = cls(path, sample_rate)
        return _LOADED[key]

    def has_program(self, program: int, bank: int = 0) -> bool:
        return bool(self.font.get_preset_index(bank, program) >= 0)

    def render(self, program: int, notes: list[Note], n: int, bend: np.ndarray | None = None) -> np.ndarray:
        """Play ``notes`` (times in seconds) on GM ``program`` into a mono (n,) float32 signal.

        ``bend``: optional (n,) pitch offset in semitones (|bend| <= 2) applied through the pitch wheel
        (vibrato, glides); the part is then best monophonic. Notes past the end are cut.
        """
        sr = self.sample_rate
        font = self.font
        # reset() only starts a fast (10 ms) release of the voices still sounding: render them out, so that a
        # part never hears the tail of the previous one (and a song does not depend on what was rendered before)
        font.reset()
        font.render(self._flush, False)
        if font.get_preset_index(0, program) < 0:
            raise AssetError(
                f"{self.path}: no General MIDI program {program} in this SoundFont: {SOUNDFONT_HINT}"
            )
        font.channel_set_preset_number(0, program, False)
        font.channel_set_pitch_range(0, BEND_RANGE)
        events: list[tuple[int, int, int, float]] = []  # (sample, 0 = off / 1 = on, key, velocity)
        for note in notes:
            a = int(round(note.t * sr))
            if a >= n:
                continue
            key = int(np.clip(round(note.midi), 0, 127))
            events.append((max(a, 0), 1, key, float(np.clip(note.vel, 0.02, 1.0))))
            events.append((max(a + max(1, int(round(note.dur * sr))), 1), 0, key, 0.0))
        events.sort(key=lambda e: (e[0], e[1]))
        stops = sorted(
            {e[0] for e in events if e[0] < n}
            | ({*range(0, n, BEND_BLOCK)} if bend is not None else set())
            | {n}
        )
        out = np.zeros((n, 2), np.float32)
        buf = out.data.cast("B")
        row = 8  # bytes per stereo float32 frame
        k = 0
        pos = 0
        for stop in stops:
            if stop > pos:
                font.render(buf[pos * row : stop * row], False)
                pos = stop
            while k < len(events) and events[k][0] <= pos:
                _, on, key, vel = events[k]
                if on:
                    font.channel_note_on(0, key, vel)
                else:
                    font.channel_note_off(0, key)
                k += 1
            if bend is not None and pos < n:
                wheel = 8192 + bend[pos] / BEND_RANGE * 8191
                font.channel_set_pitch_wheel(0, int(np.clip(round(wheel), 0, 16383)))
        return out.mean(axis=1)
