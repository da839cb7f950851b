"""Render a :class:`~.arrange.SampleSong` into four stereo stems: parts on the SoundFont, drums from the
song's Hydrogen kit, vocals from the bank; then production (EQ, band limits, compression, reverb) and levels.
The vocal stem is exactly zero outside the phrase windows; stems are quantised so they sum exactly."""

from __future__ import annotations

from typing import Any

import numpy as np

from bsmamba2 import audio
from bsmamba2.data.synth.render import DRUM_LEVEL, DRUM_PAN, STEM_ORDER, pan_gains, place, quantise, widen
from bsmamba2.data.synth.samples import production as fx
from bsmamba2.data.synth.samples.arrange import SampleSong
from bsmamba2.data.synth.samples.bank import VocalBank
from bsmamba2.data.synth.samples.drumkit import DrumKit
from bsmamba2.data.synth.samples.soundfont import SoundFontPlayer
from bsmamba2.data.synth.score import Part


def _bend(part: Part, n: int, sr: int, rng: np.random.Generator) -> np.ndarray | None:
    """Pitch-wheel curve (semitones, (n,)) of a solo part: delayed vibrato on each note and scoops into some."""
    p = part.params
    if "vibrato_cents" not in p:
        return None
    bend = np.zeros(n, np.float32)
    for note in part.notes:
        a, b = int(note.t * sr), min(n, int((note.t + note.dur) * sr))
        if b <= a:
            continue
        tt = np.arange(b - a, dtype=np.float32) / sr
        depth = p["vibrato_cents"] / 100 * np.clip((tt - p["vibrato_delay"]) / 0.3, 0, 1)
        curve = depth * np.sin(2 * np.pi * p["vibrato_rate"] * tt + float(rng.uniform(0, 6.3)))
        if rng.random() < p["scoop_p"]:
            curve -= float(rng.uniform(0.5, 1.5)) * np.exp(-tt / 0.06)
        bend[a:b] = curve
    return bend


def render_parts(song: SampleSong, player: SoundFontPlayer, n: int, sr: int, rng: np.random.Generator,
                 room: fx.Reverb) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """Bass (2, n) and other (2, n) with per-part level, EQ, pan, width and reverb send; and what played."""
    played = []
    bass = player.render(song.bass.params["program"], song.bass.notes, n)
    bass = fx.compress(fx.random_eq(bass[None], sr, rng, bands=3), sr, _rms_db(bass) + float(rng.uniform(-2, 6)),
                       float(rng.uniform(2, 5)), attack=0.005)[0]  # fmt: skip
    bass_st = np.stack([bass, bass])
    played.append({"role": "bass", "program": song.bass.params["program"]})
    other = np.zeros((2, n), np.float32)
    send = np.zeros((2, n), np.float32)
    for part in song.others:
        x = player.render(part.params["program"], part.notes, n, _bend(part, n, sr, rng))
        if not np.any(x):
            continue
        x = fx.random_eq(x[None], sr, rng, bands=3, max_db=4.0)[0]
        gl, gr = pan_gains(part.pan)
        st = widen(np.stack([gl * x, gr * x]).astype(np.float32), part.width, sr)
        g = np.float32(10 ** (part.gain_db / 20) * 0.05 / (_rms(st) + 1e-9))
        other += g * st
        send += (g * part.reverb) * st
        played.append({"role": str(part.name), "program": int(part.params["program"])})
    other += room(send)
    return bass_st, other, played


def render_drums(song: SampleSong, kit: DrumKit, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Each drum event as a sample hit of the song's kit, panned; open hats are choked by the next closed hat."""
    out = np.zeros((2, n), np.float32)
    flip = 1.0 if rng.random() < 0.5 else -1.0  # drummer's or audience's perspective
    closed = np.array(sorted(t for p, t, _ in song.drums if p == "hat"))
    for piece, t, vel in song.drums:
        x = kit.hit(piece, float(np.clip(vel, 0, 1)), sr, rng)
        if x is None:
            continue
        x = x * np.float32(DRUM_LEVEL[piece] * 10 ** (rng.normal(0, 1.0) / 20))
        if piece == "open_hat" and closed.size:
            nxt = (
                closed[np.searchsorted(closed, t + 1e-3)]
                if np.searchsorted(closed, t + 1e-3) < closed.size
                else None
            )
            if nxt is not None and int((nxt - t) * sr) < len(x):
                m = max(int((nxt - t) * sr), 1)
                x = x[:m] * np.linspace(1, 0.2, m, dtype=np.float32) ** 2
        place(out, x, int(round(t * sr)), pan_gains(flip * DRUM_PAN[piece]))
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(_rms(x))


def _item_audio(bank: VocalBank, item_id: str, sr: int, ratio: float, cents: float = 0.0) -> np.ndarray:
    """A bank item resampled so that its pitch moves by ``ratio`` (and ``cents``) at ``sr``."""
    x = bank.audio(bank.items[item_id], bank.sample_rate)
    r = ratio * 2 ** (cents / 1200)
    return (
        audio.resample(x[None], bank.sample_rate, int(round(sr / r)))[0]
        if abs(r - 1) > 1e-6 or sr != bank.sample_rate
        else x
    )


def _fade_cut(y: np.ndarray, n: int, fade: int) -> np.ndarray:
    """``y`` cut to ``n`` samples with a linear fade over its last ``fade`` samples when it was cut."""
    if n >= len(y):
        return y
    y = y[:n].copy()
    m = min(n // 3, fade)
    if m > 0:
        y[-m:] *= np.linspace(1, 0, m, dtype=np.float32)
    return y


def render_vocals(song: SampleSong, bank: VocalBank, n: int, sr: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Dry vocals (2, n) (lead, double, harmony, backing, breath) and the phrase mask (n,) (1 inside windows,
    fading to 0 over the last 30 ms of each)."""
    ratio = 2 ** (song.transpose / 12)
    dry = np.zeros((2, n), np.float32)
    mask = np.zeros(n, np.float32)
    pan_h = float(rng.choice([-0.45, 0.45]))
    dbl_cents = float(rng.uniform(-9, 9))
    for ph in song.phrases:
        a, b = int(round(ph.start * sr)), min(n, int(round(ph.end * sr)))
        seg = np.zeros((2, b - a), np.float32)
        layers = [(i, t, ln, 1.0, 0.0, 0.0) for i, t, ln in ph.lines]
        if ph.doubled:
            layers += [
                (i, t + float(rng.uniform(0.01, 0.03)), ln, 0.5, -pan_h, dbl_cents) for i, t, ln in ph.lines
            ]
        layers += [(i, t, ln, 0.45, pan_h, 0.0) for i, t, ln in ph.harmony]
        if ph.breath:
            layers.append((ph.breath[0], ph.breath[1], 10.0, 0.3, 0.0, 0.0))
        for item, t, length, gain, pan, cents in layers:
            y = _fade_cut(_item_audio(bank, item, sr, ratio, cents), int(length * sr), int(0.06 * sr))
            place(seg, y * np.float32(gain), int(round(t * sr)) - a, pan_gains(pan))
        for item, t, length in ph.backing:
            y = _fade_cut(_item_audio(bank, item, sr, ratio), int(length * sr), int(0.08 * sr))
            place(seg, y * np.float32(0.22), int(round(t * sr)) - a, pan_gains(float(rng.uniform(-0.8, 0.8))))
        dry[:, a:b] = seg
        mask[a:b] = 1.0
        f = min((b - a) // 4, int(0.03 * sr))
        if f > 0:
            mask[b - f : b] = np.linspace(1, 0, f, dtype=np.float32)
    return dry, mask


def produce(stems: dict[str, np.ndarray], mask: np.ndarray, sr: int, rng: np.random.Generator, vocal_room: fx.Reverb
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Per-stem production: EQ, compression, band limits; vocals also reverb; vocals and other sometimes an
    exciter. Returns the stems (levels untouched) and the band-limit settings per stem."""
    info: dict[str, Any] = {}
    v = stems["vocals"]
    if np.any(v):
        v = fx.random_eq(v, sr, rng, bands=4, max_db=5.0)
        if rng.random() < 0.65:  # Kokoro stops at 12 kHz: often give the voice an "air" band
            v = fx.exciter(v, sr, float(rng.uniform(0.05, 0.4)))
        active = mask > 0
        v = fx.compress(v, sr, _rms_db(v[:, active]) + float(rng.uniform(-6, 0)), float(rng.uniform(2, 6)))
        v = v + vocal_room(v) * np.float32(rng.uniform(0.05, 0.3)) * mask
        stems["vocals"] = v * (mask > 0)
    d = fx.random_eq(stems["drums"], sr, rng, bands=3)
    if rng.random() < 0.7:
        d = fx.compress(d, sr, _rms_db(d) + float(rng.uniform(-3, 6)), float(rng.uniform(2, 6)), attack=0.003)
    stems["drums"] = d
    if np.any(stems["other"]) and rng.random() < 0.35:  # SoundFont samples are often dull: some air there too
        stems["other"] = fx.exciter(stems["other"], sr, float(rng.uniform(0.05, 0.3)))
    ranges = {"vocals": ((40, 250), (7000, 20000)), "drums": ((20, 80), (7000, 20000)),
              "bass": ((20, 50), (2500, 16000)), "other": ((25, 300), (5000, 20000))}  # fmt: skip
    for s in STEM_ORDER:
        if np.any(stems[s]):
            stems[s], info[s] = fx.band_limit(stems[s], sr, rng, *ranges[s], p_lp=0.7,
                                              p_ceiling=0.0 if s == "vocals" else 0.35)  # fmt: skip
    stems["vocals"] = stems["vocals"] * (mask > 0)  # the filters ring a little past the window ends
    return stems, info


def level_and_master(stems: dict[str, np.ndarray], mask: np.ndarray, sr: int, rng: np.random.Generator
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Stem levels, an optional shared bus compression (one gain curve for all stems: the sum stays exact),
    a random master level, then quantisation (see render.quantise)."""
    active = mask > 0

    def level(x: np.ndarray, db: float, where: np.ndarray | None = None) -> np.ndarray:
        r = _rms(x[:, where]) if where is not None and where.any() else _rms(x)
        return (x * np.float32(10 ** (db / 20) / r)).astype(np.float32) if np.any(x) else x

    out = {
        "vocals": level(stems["vocals"], -16 + float(rng.uniform(-4, 3)), active),
        "drums": level(stems["drums"], -17 + float(rng.uniform(-3, 3))),
        "bass": level(stems["bass"], -19 + float(rng.uniform(-3, 3))),
        "other": level(stems["other"], -19 + float(rng.uniform(-3, 3))),
    }
    if rng.random() < 0.5:  # glue compression on the mix bus, applied as one gain to every stem
        mix = np.sum(np.stack(list(out.values())), axis=0)
        gain = fx.compressor_gain(
            mix, sr, _rms_db(mix) + float(rng.uniform(0, 6)), float(rng.uniform(1.5, 3))
        )
        out = {s: x * gain for s, x in out.items()}
    peak = max(float(np.abs(sum(out.values())).max()), *(float(np.abs(x).max()) for x in out.values()))
    scale = (0.9 / peak if peak > 0 else 1.0) * float(10 ** (rng.uniform(-11, 0) / 20))
    return {s: quantise(out[s] * np.float32(scale)) for s in STEM_ORDER}
