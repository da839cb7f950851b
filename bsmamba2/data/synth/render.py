"""Turn a composed :class:`~bsmamba2.data.synth.composer.Song` into four stereo stems.

Parts are rendered note by note (vectorised per note; identical notes are rendered once and reused), panned
with a constant-power law, optionally widened, summed per stem, sent through a per-stem synthetic reverb
(FFT convolution), levelled, and finally quantised to a 2^-22 grid so that the stems sum to the mixture
*exactly* in float32 in any order (every partial sum of four values below 1 on that grid is representable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bsmamba2.data.synth import instruments
from bsmamba2.data.synth.score import Part, Song
from bsmamba2.data.synth.voice import render_phrase

QUANT = 2.0**-22  # stem sample grid: sums of 4 stems with |x| < 1 stay exact in float32
STEM_ORDER = ("vocals", "drums", "bass", "other")


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan law: pan in [-1, 1] -> (left, right) gains."""
    a = (pan + 1) * np.pi / 4
    return float(np.cos(a)), float(np.sin(a))


def place(out: np.ndarray, x: np.ndarray, start: int, gains: tuple[float, float]) -> None:
    """Add mono ``x`` into stereo ``out`` (2, N) at sample ``start`` with per-channel gains (clipped at the ends)."""
    n = out.shape[1]
    if start >= n or start + len(x) <= 0:
        return
    a, b = max(0, start), min(n, start + len(x))
    seg = x[a - start : b - start]
    out[0, a:b] += gains[0] * seg
    out[1, a:b] += gains[1] * seg


def widen(x: np.ndarray, width: float, sr: int) -> np.ndarray:
    """Haas-style widening of a stereo part: blend a 12 ms delayed copy into the right channel."""
    if width <= 0:
        return x
    d = int(0.012 * sr)
    y = x.copy()
    y[1, d:] = (1 - 0.5 * width) * x[1, d:] + 0.5 * width * x[0, :-d]
    y[0, d:] = (1 - 0.25 * width) * x[0, d:] + 0.25 * width * x[1, :-d]
    return y


def render_part(part: Part, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """All notes of a pitched part -> (2, n) float32."""
    out = np.zeros((2, n), np.float32)
    cache: dict[tuple[float, float, float], np.ndarray] = {}
    gains = pan_gains(part.pan)
    for note in part.notes:
        key = (note.midi, round(note.dur, 2), round(note.vel, 1))
        if key not in cache:
            cache[key] = instruments.render_note(
                part.engine, note.midi, key[1], max(key[2], 0.05), sr, rng, part.params
            )
        y = cache[key] * (note.vel / max(key[2], 0.05))
        place(out, y, int(round(note.t * sr)), gains)
    return widen(out, part.width, sr)


DRUM_PAN = {"kick": 0.0, "snare": 0.05, "clap": 0.0, "rim": 0.1, "hat": 0.35, "open_hat": 0.35, "shaker": -0.4,
            "ride": -0.4, "crash": -0.3, "tom_hi": 0.3, "tom_mid": 0.0, "tom_lo": -0.35}  # fmt: skip
DRUM_LEVEL = {"kick": 1.0, "snare": 0.8, "clap": 0.7, "rim": 0.5, "hat": 0.3, "open_hat": 0.3, "shaker": 0.2,
              "ride": 0.25, "crash": 0.4, "tom_hi": 0.7, "tom_mid": 0.7, "tom_lo": 0.75}  # fmt: skip


def render_drums(song: Song, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The drum events -> (2, n): each piece pre-rendered in 3 variants (round-robin) and placed per hit."""
    out = np.zeros((2, n), np.float32)
    kit: dict[str, list[np.ndarray]] = {}
    flip = 1.0 if rng.random() < 0.5 else -1.0  # drummer's or audience's perspective
    for piece, t, vel in song.drums:
        if piece not in kit:
            kit[piece] = [instruments.drum_sound(piece, sr, rng, song.kit) for _ in range(3)]
        x = kit[piece][int(rng.integers(3))] * (vel * DRUM_LEVEL[piece])
        place(out, x, int(round(t * sr)), pan_gains(flip * DRUM_PAN[piece]))
    return out


def impulse_response(sr: int, rt60: float, rng: np.random.Generator, predelay: float = 0.01) -> np.ndarray:
    """A stereo room: decorrelated exponentially decaying noise that darkens over time, plus a few early
    reflections. Returns (2, L) float32 with unit energy per channel."""
    n = int((rt60 + predelay) * sr)
    t = np.arange(n) / sr
    env = np.exp(-6.9 * t / rt60) * (t >= predelay)
    out = np.zeros((2, n), np.float32)
    for c in range(2):
        bright = rng.standard_normal(n)
        dark = instruments.shaped_noise(n, sr, rng, instruments.bandpass(60, 2500)) * 3
        w = np.clip(t / rt60, 0, 1)  # high frequencies die first
        x = (1 - w) * bright + w * dark
        for _ in range(6):
            k = int(rng.uniform(predelay, predelay + 0.05) * sr)
            if k < n:
                x[k] += rng.uniform(-4, 4)
        x = x * env
        out[c] = x / (np.sqrt(np.sum(x**2)) + 1e-9)
    return out


class Room:
    """One synthetic room shared by all stems of a song (they were "recorded" in the same space). The reverb
    is mono-in, stereo-out: the send is summed to mono, convolved with a decorrelated stereo impulse
    response. The IR spectrum is computed once per FFT size and reused for every stem."""

    def __init__(self, ir: np.ndarray) -> None:
        self.ir = torch.from_numpy(np.ascontiguousarray(ir))  # (2, L)
        self._spec: dict[int, torch.Tensor] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(2, N) -> wet (2, N) (tail cut at N)."""
        n = x.shape[1]
        m = 1 << int(np.ceil(np.log2(n + self.ir.shape[1])))
        # torch's FFT rounds differently with different thread counts: pin one thread so that a track is
        # bit-identical whether it is rendered in the main process or in a pool worker.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if m not in self._spec:
                self._spec[m] = torch.fft.rfft(self.ir, n=m)
            mono = torch.from_numpy(np.ascontiguousarray(x.mean(axis=0, dtype=np.float32)))
            xs = torch.fft.rfft(mono, n=m)  # (m // 2 + 1,)
            return torch.fft.irfft(self._spec[m] * xs[None], n=m)[:, :n].numpy()
        finally:
            torch.set_num_threads(threads)


def render_vocals(song: Song, n: int, sr: int, rng: np.random.Generator, room: Room) -> np.ndarray:
    """Each phrase sung and written inside its window, then the room reverb, kept only inside the phrase
    windows (with a short fade where a tail is cut): the stem is exactly zero everywhere else."""
    dry = np.zeros((2, n), np.float32)
    harmony_singer = dict(
        song.singer, formant_scale=song.singer["formant_scale"] * 1.05, breath=song.singer["breath"] + 0.05
    )
    pan_h = float(rng.choice([-0.4, 0.4]))
    mask = np.zeros(n, np.float32)
    fade = int(0.03 * sr)
    for ph in song.phrases:
        a, b = int(round(ph.start * sr)), min(n, int(round(ph.end * sr)))
        length = (b - a) / sr
        y = render_phrase(ph.syllables, length, song.singer, sr, rng, inhale=ph.inhale)
        dyn = 10 ** (float(rng.uniform(-3, 3)) / 20)
        st: np.ndarray = np.stack([y, y]) * np.float32(dyn)
        if ph.harmony:
            hy = render_phrase(ph.harmony, length, harmony_singer, sr, rng) * np.float32(0.5 * dyn)
            gl, gr = pan_gains(pan_h)
            st = st + np.stack([gl * hy, gr * hy]) * np.float32(np.sqrt(2))
        dry[:, a:b] = st[:, : b - a]
        mask[a:b] = 1.0
        f = min((b - a) // 4, fade)
        if f > 0:  # the reverb tail is cut at the window end: fade it out instead of clicking
            mask[b - f : b] = np.linspace(1, 0, f, dtype=np.float32)
    if not song.phrases:
        return dry
    wet = room(dry) * np.float32(rng.uniform(0.05, 0.25))
    return (dry + wet * mask).astype(np.float32) * (mask > 0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def render_song(song: Song, sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Song -> {stem: (2, N) float32} for vocals, drums, bass, other, levelled and quantised (see module doc)."""
    n = int(round(song.seconds * sr))
    drums = render_drums(song, n, sr, rng)
    bass = render_part(song.bass, n, sr, rng)
    other = np.zeros((2, n), np.float32)
    other_send = np.zeros((2, n), np.float32)
    for part in song.others:
        x = render_part(part, n, sr, rng)
        g = np.float32(10 ** (part.gain_db / 20) / _rms(x) * 0.05) if np.any(x) else np.float32(0)
        other += g * x
        other_send += (g * part.reverb) * x
    room = Room(
        impulse_response(sr, float(rng.uniform(0.5, 1.8)), rng, predelay=float(rng.uniform(0.005, 0.03)))
    )
    other += room(other_send)
    drums += room(drums) * np.float32(rng.uniform(0.03, 0.15))
    vocals = render_vocals(song, n, sr, rng, room)

    # Levels: drums, bass and other by their RMS over the track, vocals by their RMS inside the phrases.
    def level(x: np.ndarray, db: float, active: np.ndarray | None = None) -> np.ndarray:
        r = _rms(x[:, active]) if active is not None and active.any() else _rms(x)
        return (x * np.float32(10 ** (db / 20) / r)).astype(np.float32) if np.any(x) else x

    active = np.any(vocals != 0, axis=0)
    stems = {
        "vocals": level(vocals, -16 + float(rng.uniform(-3, 3)), active),
        "drums": level(drums, -17 + song.drum_gain_db + float(rng.uniform(-2, 2))),
        "bass": level(bass, -19 + song.bass.gain_db + float(rng.uniform(-2, 2))),
        "other": level(other, -19 + float(rng.uniform(-2, 2))),
    }
    # One scale for all stems so the mixture and every stem peak at 0.9 at most (no clipping in any format)...
    peak = max(float(np.abs(sum(stems.values())).max()), *(float(np.abs(x).max()) for x in stems.values()))
    # ...then a random master level (peaks from -12 to -1 dBFS), as real songs differ in loudness.
    scale = (0.9 / peak if peak > 0 else 1.0) * float(10 ** (rng.uniform(-11, 0) / 20))
    return {s: quantise(stems[s] * np.float32(scale)) for s in STEM_ORDER}


def quantise(x: np.ndarray) -> np.ndarray:
    """Round to multiples of 2^-22 (float32): exact sums of up to four stems, -132 dB resolution."""
    # Scaling by a power of two and rounding are exact in float32 for |x| < 1, so no float64 copy is needed.
    y = np.asarray(x, np.float32) * np.float32(1 / QUANT)
    np.rint(y, out=y)
    y *= np.float32(QUANT)
    return y


def song_meta(song: Song, sr: int, seed: int) -> dict[str, Any]:
    """JSON-able description of the track: phrases (seconds and samples, bucket), preset, seed, tempo, key, ..."""
    phrases: list[dict[str, Any]] = []
    for p in song.phrases:
        a, b = int(round(p.start * sr)), int(round(p.end * sr))
        phrases.append({
            "start": a / sr, "end": b / sr, "start_sample": a, "end_sample": b, "duration": (b - a) / sr,
            "bucket": p.bucket, "regime": p.regime, "notes": len(p.syllables), "harmony": p.harmony is not None,
        })  # fmt: skip
    return {
        "generator": "bsmamba2.synth",
        "version": 1,
        "seed": seed,
        "preset": song.preset,
        "sample_rate": sr,
        "frames": int(round(song.seconds * sr)),
        "seconds": song.seconds,
        "tempo": round(song.tempo, 3),
        "meter": f"{song.beats_per_bar}/4",
        "key": song.key_name,
        "style": song.style,
        "singer": song.singer["name"],
        "singer_params": {k: v for k, v in song.singer.items() if k != "name"},
        "sections": [{"name": s, "bar": b, "bars": nb} for s, b, nb in song.sections],
        "bass": song.bass.engine,
        "other_parts": [{"role": str(p.name), "engine": p.engine} for p in song.others],
        "vocal_seconds": round(sum(p["duration"] for p in phrases), 4),
        "phrases": phrases,
    }
