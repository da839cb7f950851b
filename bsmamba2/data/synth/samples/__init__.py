"""The samples engine of ``bsmamba2 synth``: songs played on real-instrument samples (a General MIDI
SoundFont through tinysoundfont, Hydrogen drum kits) with vocals from a bank of sung Kokoro / espeak-ng
phrases, mixed with EQ, band limits, compression and synthetic-room reverb.

Rendering needs numpy, scipy, soundfile, soxr and tinysoundfont only, plus an assets folder (see
:mod:`.assets`); building the vocal bank (:mod:`.bankbuild`) needs the ``[synth]`` extra and espeak-ng.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bsmamba2.data.synth.samples import production as fx
from bsmamba2.data.synth.samples.arrange import SampleSong, arrange_song
from bsmamba2.data.synth.samples.assets import AssetError, Assets
from bsmamba2.data.synth.samples.bank import VocalBank, open_bank
from bsmamba2.data.synth.samples.drumkit import DrumKit, load_kits
from bsmamba2.data.synth.samples.mix import (
    level_and_master,
    produce,
    render_drums,
    render_parts,
    render_vocals,
)
from bsmamba2.data.synth.samples.soundfont import SoundFontPlayer
from bsmamba2.data.synth.theory import NOTE_NAMES

__all__ = ["AssetError", "Assets", "synthesize_samples_track"]

_KITS: dict[str, list[DrumKit]] = {}


def _kits(folder: Path) -> list[DrumKit]:
    key = str(folder.resolve())
    if key not in _KITS:
        _KITS[key] = load_kits(folder)
    return _KITS[key]


def synthesize_samples_track(
    seconds: float, preset: str, seed: int, assets: Assets | str | Path | None, sample_rate: int = 44100
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Compose and render one song on the samples engine: ``({stem: (2, N) float32}, meta)``, N = round(seconds
    * sample_rate). Deterministic in ``seed`` for given assets; stems on the 2^-22 grid (exact sums)."""
    a = assets if isinstance(assets, Assets) else Assets.locate(assets)
    bank = open_bank(a.vocals)
    kits = _kits(a.drumkits)
    player = SoundFontPlayer.shared(a.soundfont, sample_rate)
    rng = np.random.default_rng(seed)
    song = arrange_song(float(seconds), preset, rng, bank, len(kits))
    sr, n = sample_rate, int(round(seconds * sample_rate))
    room = fx.Reverb(sr, float(rng.uniform(0.4, 1.8)), rng, predelay=float(rng.uniform(0.005, 0.03)))
    vocal_room = fx.Reverb(sr, float(rng.uniform(0.8, 2.5)), rng, predelay=float(rng.uniform(0.01, 0.06)))
    bass, other, played = render_parts(song, player, n, sr, rng, room)
    drums = render_drums(song, kits[song.kit], n, sr, rng)
    drums = drums + room(drums) * np.float32(rng.uniform(0.03, 0.15))
    vocals, mask = render_vocals(song, bank, n, sr, rng)
    stems, bands = produce(
        {"vocals": vocals, "drums": drums, "bass": bass, "other": other}, mask, sr, rng, vocal_room
    )
    stems = level_and_master(stems, mask, sr, rng)
    return stems, samples_meta(song, bank, kits[song.kit], played, bands, sr, seed)


def samples_meta(song: SampleSong, bank: VocalBank, kit: DrumKit, played: list[dict[str, Any]],
                 bands: dict[str, Any], sr: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """JSON-able description of a samples-engine track (phrases in seconds and samples, sources, settings)."""
    phrases: list[dict[str, Any]] = []
    for p in song.phrases:
        a, b = int(round(p.start * sr)), int(round(p.end * sr))
        phrases.append({
            "start": a / sr, "end": b / sr, "start_sample": a, "end_sample": b, "duration": (b - a) / sr,
            "bucket": p.bucket, "regime": p.regime, "lines": [i for i, _, _ in p.lines],
            "harmony": bool(p.harmony), "doubled": p.doubled, "backing": len(p.backing), "breath": p.breath is not None,
        })  # fmt: skip
    session = bank.sessions[song.session]
    return {
        "generator": "bsmamba2.synth", "engine": "samples", "version": 2, "seed": seed, "preset": song.preset,
        "sample_rate": sr, "frames": int(round(song.seconds * sr)), "seconds": song.seconds,
        "tempo": round(song.tempo, 3), "meter": f"{song.beats_per_bar}/4", "key": _key_name(song.key, song.mode),
        "style": song.style, "singer": session.voice, "language": session.lang, "session": song.session,
        "vocal_bank": bank.digest[:16], "transpose": song.transpose, "drum_kit": kit.name, "parts": played, "band_limits": bands,
        "sections": [{"name": s, "bar": b, "bars": nb} for s, b, nb in song.sections],
        "vocal_seconds": round(sum(p["duration"] for p in phrases), 4), "phrases": phrases,
    }  # fmt: skip


def _key_name(key: int, mode: str) -> str:
    return f"{NOTE_NAMES[key]} {mode}"
