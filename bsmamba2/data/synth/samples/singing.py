"""Speech -> singing with the WORLD vocoder (pyworld, imported lazily: it is behind the ``[synth]`` extra).

A spoken line is analysed into f0, spectral envelope and aperiodicity (5 ms frames) and cut into syllables at
the dips of its loudness. Each syllable's consonant is kept at its natural length just before its note, its
vowel core is stretched over the note, and the f0 is replaced by the melody: glides between notes, scoops,
delayed vibrato, slow drift and jitter. The envelope can be warped in frequency (a different vocal tract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bsmamba2.data.synth.samples.assets import AssetError

FP = 5.0  # WORLD frame period (ms)
FPS = 1000.0 / FP


def pyworld() -> Any:
    try:
        import pyworld as pw
    except ImportError:
        raise AssetError("singing needs pyworld: pip install 'bsmamba2[synth]'") from None
    return pw


@dataclass
class Analysis:
    """WORLD parameters of one utterance: f0 (F,), envelope sp and aperiodicity ap (F, K), loudness (F,) dB."""

    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray
    loud: np.ndarray
    sr: int


@dataclass
class SungNote:
    """A note of the melody: onset and duration (s, from the line start), MIDI pitch, syllable index."""

    t: float
    dur: float
    midi: float
    syl: int


def analyze(x: np.ndarray, sr: int) -> Analysis:
    """WORLD analysis (DIO + StoneMask, CheapTrick, D4C) of mono speech ``x`` (N,)."""
    pw = pyworld()
    xd = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pw.dio(xd, sr, frame_period=FP, f0_floor=60.0, f0_ceil=700.0)
    f0 = pw.stonemask(xd, f0, t, sr)
    sp = pw.cheaptrick(xd, f0, t, sr)
    ap = pw.d4c(xd, f0, t, sr)
    loud = 10 * np.log10(sp.sum(axis=1) + 1e-12)
    k = np.hanning(7) / np.hanning(7).sum()
    return Analysis(f0, sp, ap, np.convolve(loud, k, mode="same"), sr)


def syllables(an: Analysis, n: int) -> list[tuple[int, int, int, int]]:
    """Cut the utterance into ``n`` syllables at the n - 1 deepest loudness dips (>= 50 ms apart). Returns
    frames (start, vowel start, vowel end, end) per syllable; the vowel is the voiced part within 6 dB of the
    syllable's peak."""
    active = np.flatnonzero(an.loud > an.loud.max() - 35)
    a, b = int(active[0]), int(active[-1]) + 1
    loud = an.loud[a:b]
    dips = [i for i in range(1, len(loud) - 1) if loud[i] <= loud[i - 1] and loud[i] < loud[i + 1]]
    dips.sort(key=lambda i: loud[i])
    cuts: list[int] = []
    for i in dips:
        if len(cuts) == n - 1:
            break
        if all(abs(i - c) >= 10 for c in cuts) and 8 <= i <= len(loud) - 8:
            cuts.append(i)
    bounds = [a, *sorted(a + c for c in cuts), b]
    out = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        seg = an.loud[s:e]
        ok = np.flatnonzero((seg >= seg.max() - 6) & (an.f0[s:e] > 0))
        c0, c1 = (s + int(ok[0]), s + int(ok[-1]) + 1) if ok.size else (s + (e - s) // 3, e - (e - s) // 3)
        out.append((s, c0, max(c1, c0 + 1), e))
    return out


def _warp(segs: list[tuple[int, int, int, int]], notes: list[SungNote], pre: float, frames: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Output frame -> (source frame position, 1 where a vowel is held, 1 where anything sounds)."""
    pos, held, gain = np.zeros(frames), np.zeros(frames), np.zeros(frames)
    spans = []
    for i in range(len(segs)):
        mine = [nt for nt in notes if nt.syl == i]
        spans.append(
            (int(round((pre + mine[0].t) * FPS)), int(round((pre + mine[-1].t + mine[-1].dur) * FPS)))
        )
    onsets = []
    for i, (s, c0, _, _) in enumerate(segs):
        room = spans[i][0] if i == 0 else 0.45 * (spans[i][0] - spans[i - 1][0])
        onsets.append(int(min(c0 - s, 24, max(1, room))))
    for i, (s, c0, c1, e) in enumerate(segs):
        a, b = spans[i]
        if i + 1 < len(segs):
            b = min(b, spans[i + 1][0] - onsets[i + 1])
        coda = int(min(e - c1, 16, max(0, 0.3 * (b - a))))
        pieces = ((a - onsets[i], a, s, c0, 0.0), (a, b - coda, c0, c1, 1.0), (b - coda, b, c1, e, 0.0))
        for o0, o1, s0, s1, h in pieces:
            o0, o1 = max(o0, 0), min(o1, frames)
            if o1 <= o0:
                continue
            pos[o0:o1] = np.linspace(s0, max(s0, s1 - 1), o1 - o0)
            held[o0:o1] = h
            gain[o0:o1] = 1.0
    return pos, held, gain


def _melody_curve(notes: list[SungNote], pre: float, frames: int, style: dict[str, float],
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Frame pitch in MIDI units: the notes held, glides, scoops, delayed vibrato, drift and jitter."""
    midi = np.full(frames, notes[0].midi)
    vib_env = np.zeros(frames)
    scoop = np.zeros(frames)
    t = np.arange(frames) / FPS
    for nt in notes:
        a = int(round((pre + nt.t) * FPS))
        midi[max(a - 4, 0) :] = nt.midi  # pitch changes just before the vowel, during the consonant
        tt = t[a:] - t[a] if a < frames else t[:0]
        vib_env[a:] = np.clip((tt - style["vib_delay"]) / 0.25, 0, 1) * (tt < nt.dur + 0.05)
        if rng.random() < style["scoop_p"]:
            scoop[a:] += -float(rng.uniform(0.4, 1.4)) * np.exp(-tt / 0.045)
    g = max(3, int(style["glide"] * FPS))
    k = np.hanning(2 * g + 1)
    curve = np.convolve(np.pad(midi, g, mode="edge"), k / k.sum(), mode="valid")
    rate = style["vib_rate"] * (1 + 0.04 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6)))
    vib = style["vib_cents"] / 100 * vib_env * np.sin(2 * np.pi * np.cumsum(rate) / FPS)
    drift = np.convolve(np.cumsum(rng.normal(0, 0.015, frames)), np.ones(40) / 40, mode="same")
    return curve + scoop + vib + drift - drift.mean() + rng.normal(0, 0.03, frames)


def warp_envelope(sp: np.ndarray, alpha: float) -> np.ndarray:
    """Scale the formants of an envelope (F, K) by ``alpha`` (> 1: a shorter vocal tract)."""
    if abs(alpha - 1) < 1e-3:
        return sp
    k = np.arange(sp.shape[1]) / alpha
    i = np.clip(np.floor(k).astype(int), 0, sp.shape[1] - 2)
    w = np.clip(k - i, 0, 1)
    return np.ascontiguousarray(sp[:, i] * (1 - w) + sp[:, i + 1] * w)


def sing(an: Analysis, segs: list[tuple[int, int, int, int]], notes: list[SungNote], style: dict[str, float],
         rng: np.random.Generator, pre: float = 0.15, tail: float = 0.12, transpose: float = 0.0) -> np.ndarray:  # fmt: skip
    """Sing ``notes`` with the syllables ``segs`` of the utterance ``an`` (one or more notes per syllable; note
    times from the first note). ``pre``: seconds before the first note (its consonant), ``tail``: after the
    last. ``transpose`` (semitones) shifts the melody (harmonies). Returns mono float32 at ``an.sr``."""
    pw = pyworld()
    end = max(nt.t + nt.dur for nt in notes)
    frames = int(round((pre + end + tail) * FPS))
    pos, held, gain = _warp(segs, notes, pre, frames)
    i0 = np.clip(np.floor(pos).astype(int), 0, len(an.f0) - 2)
    w = (pos - i0)[:, None]
    sp = np.exp((1 - w) * np.log(an.sp[i0] + 1e-16) + w * np.log(an.sp[i0 + 1] + 1e-16))
    sp = warp_envelope(sp, style["formant"])
    ap = np.ascontiguousarray(np.clip((1 - w) * an.ap[i0] + w * an.ap[i0 + 1], 0, 1))
    voiced = ((an.f0[np.rint(pos).astype(int).clip(0, len(an.f0) - 1)] > 0) | (held > 0)) & (gain > 0)
    f0 = 440.0 * 2 ** ((_melody_curve(notes, pre, frames, style, rng) + transpose - 69) / 12) * voiced
    ap[held > 0] *= style["breathy"]  # held vowels: less noise than in speech, more for breathy singers
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), ap, an.sr, FP)
    k = np.hanning(5) / np.hanning(5).sum()
    env = np.interp(np.arange(len(y)) / an.sr * FPS, np.arange(frames), np.convolve(gain, k, mode="same"))
    return (y * env).astype(np.float32)


def sustain(an: Analysis, core: tuple[int, int], midi: float, seconds: float, style: dict[str, float],
            rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """A held vowel (backing "ooh"/"aah") from the vowel frames ``core`` of ``an``: mono float32."""
    note = [SungNote(0.0, seconds, midi, 0)]
    seg = [(core[0], core[0], core[1], core[1])]
    soft = dict(style, vib_cents=style["vib_cents"] * 0.5, scoop_p=0.0)
    y = sing(an, seg, note, soft, rng, pre=0.0, tail=0.0)
    n = len(y)
    env = np.minimum(1, np.arange(n) / (0.15 * an.sr)) * np.minimum(1, (n - np.arange(n)) / (0.3 * an.sr))
    return (y * env).astype(np.float32)


def breath(an: Analysis, core: tuple[int, int], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """An inhale: noise through the vocal tract of a vowel, rising then falling: mono float32."""
    pw = pyworld()
    frames = int(seconds * FPS)
    idx = np.linspace(core[0], core[1] - 1, frames).astype(int)
    sp = warp_envelope(an.sp[idx], float(rng.uniform(1.0, 1.15)))
    y = pw.synthesize(np.zeros(frames), np.ascontiguousarray(sp), np.ones_like(sp), an.sr, FP)
    env = np.sin(np.pi * np.clip(np.arange(len(y)) / max(len(y) - 1, 1), 0, 1)) ** 1.5
    return (y * env).astype(np.float32)
