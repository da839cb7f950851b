"""A source-filter singing-voice synthesizer (one phrase at a time).

Source: a Rosenberg glottal pulse train (its time derivative, i.e. with lip radiation) whose pitch follows
the melody with portamento, onset scoops, delayed vibrato, jitter and slow drift; shimmer on the amplitude;
pulse-synchronous aspiration noise for breathiness. Filter: a cascade of five formant resonators whose
frequencies glide from syllable to syllable (vowel targets scaled per singer), applied frame by frame in
the STFT domain (no per-sample IIR loop). Consonants are noise bursts with their own spectra (fricatives,
plosive bursts after a closure) or voiced murmurs with their own formants (nasals, liquids, glides);
an optional audible inhale precedes the first note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

N_FFT = 1024
TILT = 1.0  # exponent of the tilt filter (1 + (f/corner)^2)^-TILT: -6 dB/oct per 0.5
HOP = 256

# Vowel formants F1..F5 (Hz), adult male reference (Peterson & Barney-like); scaled per singer.
VOWEL_FORMANTS: dict[str, tuple[float, ...]] = {
    "a": (730, 1090, 2440, 3400, 4200),
    "e": (530, 1840, 2480, 3400, 4200),
    "i": (270, 2290, 3010, 3500, 4300),
    "o": (570, 840, 2410, 3300, 4100),
    "u": (300, 870, 2240, 3300, 4100),
    "ae": (660, 1720, 2410, 3400, 4200),
    "uh": (520, 1190, 2390, 3300, 4100),
}
VOWELS = tuple(VOWEL_FORMANTS)
# Formant bandwidths (Hz) grow with frequency, keeping the formant peaks of similar height; F6-F8 sit at
# neutral-tube positions (they barely move with the vowel) and carry the harmonics above 5 kHz.
BANDWIDTHS = np.array([70.0, 90.0, 140.0, 220.0, 300.0, 450.0, 520.0, 600.0])
HIGH_FORMANTS = (5500.0, 6500.0, 7500.0)

# Consonants: kind, duration (s), voicing level during the consonant, noise band (Hz), noise level,
# formants for voiced murmurs.
CONSONANT_SPECS: dict[str, dict[str, Any]] = {
    "s": {"kind": "fric", "dur": 0.10, "voice": 0.0, "band": (4500, 11000), "noise": 0.25},
    "sh": {"kind": "fric", "dur": 0.10, "voice": 0.0, "band": (2000, 7000), "noise": 0.22},
    "f": {"kind": "fric", "dur": 0.08, "voice": 0.0, "band": (1500, 9000), "noise": 0.08},
    "h": {"kind": "asp", "dur": 0.07, "voice": 0.0, "band": (0, 0), "noise": 0.2},
    "z": {"kind": "fric", "dur": 0.08, "voice": 0.3, "band": (4000, 10000), "noise": 0.12},
    "v": {"kind": "fric", "dur": 0.07, "voice": 0.35, "band": (1500, 8000), "noise": 0.06},
    "p": {"kind": "stop", "dur": 0.06, "voice": 0.0, "band": (400, 3000), "noise": 0.35},
    "t": {"kind": "stop", "dur": 0.06, "voice": 0.0, "band": (3000, 9000), "noise": 0.35},
    "k": {"kind": "stop", "dur": 0.07, "voice": 0.0, "band": (1500, 4500), "noise": 0.35},
    "b": {"kind": "stop", "dur": 0.045, "voice": 0.25, "band": (300, 2500), "noise": 0.25},
    "d": {"kind": "stop", "dur": 0.045, "voice": 0.25, "band": (2500, 6000), "noise": 0.25},
    "g": {"kind": "stop", "dur": 0.05, "voice": 0.25, "band": (1200, 3500), "noise": 0.25},
    "m": {"kind": "murmur", "dur": 0.07, "voice": 0.45, "formants": (250, 1100, 2300, 3300, 4100)},
    "n": {"kind": "murmur", "dur": 0.06, "voice": 0.45, "formants": (250, 1700, 2600, 3400, 4200)},
    "l": {"kind": "murmur", "dur": 0.06, "voice": 0.6, "formants": (360, 1300, 2700, 3400, 4200)},
    "r": {"kind": "murmur", "dur": 0.06, "voice": 0.6, "formants": (420, 1300, 1600, 3300, 4100)},
    "w": {"kind": "murmur", "dur": 0.06, "voice": 0.6, "formants": (300, 700, 2200, 3300, 4100)},
    "y": {"kind": "murmur", "dur": 0.05, "voice": 0.6, "formants": (280, 2200, 3000, 3500, 4300)},
}
CONSONANTS = tuple(CONSONANT_SPECS)

# Singers: MIDI range, formant scaling, glottal open quotient / speed quotient, breathiness, vibrato depth,
# jitter (fraction of f0), "singer's formant" ring (boost near 3 kHz) and high-frequency brightness.
SINGERS: tuple[dict[str, Any], ...] = (
    {"name": "bass", "low": 40, "high": 62, "formant_scale": 0.93, "oq": 0.55, "sq": 3.0, "breath": 0.05, "vibrato_cents": 35, "jitter": 0.006, "ring": 0.8, "bright": 0.3},
    {"name": "baritone", "low": 43, "high": 67, "formant_scale": 0.97, "oq": 0.55, "sq": 3.0, "breath": 0.08, "vibrato_cents": 40, "jitter": 0.005, "ring": 0.6, "bright": 0.4},
    {"name": "tenor", "low": 48, "high": 72, "formant_scale": 1.0, "oq": 0.5, "sq": 3.2, "breath": 0.06, "vibrato_cents": 45, "jitter": 0.004, "ring": 1.0, "bright": 0.6},
    {"name": "alto", "low": 53, "high": 77, "formant_scale": 1.12, "oq": 0.6, "sq": 2.6, "breath": 0.12, "vibrato_cents": 45, "jitter": 0.004, "ring": 0.4, "bright": 0.4},
    {"name": "mezzo", "low": 55, "high": 79, "formant_scale": 1.15, "oq": 0.6, "sq": 2.8, "breath": 0.1, "vibrato_cents": 55, "jitter": 0.004, "ring": 0.6, "bright": 0.5},
    {"name": "soprano", "low": 60, "high": 84, "formant_scale": 1.2, "oq": 0.65, "sq": 2.5, "breath": 0.08, "vibrato_cents": 60, "jitter": 0.003, "ring": 0.8, "bright": 0.5},
    {"name": "child", "low": 60, "high": 81, "formant_scale": 1.3, "oq": 0.7, "sq": 2.2, "breath": 0.15, "vibrato_cents": 15, "jitter": 0.008, "ring": 0.0, "bright": 0.3},
    {"name": "breathy-pop", "low": 52, "high": 74, "formant_scale": 1.1, "oq": 0.72, "sq": 2.0, "breath": 0.3, "vibrato_cents": 20, "jitter": 0.006, "ring": 0.2, "bright": 0.8},
    {"name": "belter", "low": 55, "high": 77, "formant_scale": 1.08, "oq": 0.42, "sq": 3.5, "breath": 0.04, "vibrato_cents": 30, "jitter": 0.005, "ring": 1.2, "bright": 0.9},
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- STFT


def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def stft(x: np.ndarray) -> np.ndarray:
    """(n,) -> complex (frames, N_FFT // 2 + 1); frame j is centred on sample j * HOP."""
    xp = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    frames = sliding_window_view(xp, N_FFT)[::HOP]
    return np.fft.rfft(frames * _window(), axis=1)


def istft(spec: np.ndarray, n: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`stft` -> (n,) float32, normalised by the summed squared
    windows (exact reconstruction, edges included)."""
    win = _window()
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * win  # (F, N_FFT)
    f = frames.shape[0]
    r = N_FFT // HOP
    out = np.zeros((f + r) * HOP, np.float64)
    wsum = np.zeros_like(out)
    w2 = np.tile(win.astype(np.float64) ** 2, (len(range(0, f, r)), 1))
    # frames j, j + r, j + 2r, ... do not overlap: place each such group with one reshape-add
    for j in range(r):
        seg = frames[j::r].reshape(-1)
        out[j * HOP : j * HOP + seg.size] += seg
        wsum[j * HOP : j * HOP + seg.size] += w2[: len(frames[j::r])].reshape(-1)
    sl = slice(N_FFT // 2, N_FFT // 2 + n)
    return (out[sl] / np.maximum(wsum[sl], 1e-8)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- helpers


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (k frames)."""
    if k <= 1:
        return x
    pad = [(k // 2, k - 1 - k // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    c = np.cumsum(np.concatenate([np.zeros((1, *x.shape[1:])), xp], axis=0), axis=0)
    return (c[k:] - c[:-k]) / k


def _resonators(freqs: np.ndarray, formants: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Formant peaks per frame: freqs (K,), formants (F, M), bw (M,) -> magnitude (F, K).

    Each formant is a 2nd-order resonator |R(f; F, B)| = F^2 / sqrt((F^2 - f^2)^2 + (B f)^2) divided by the
    same resonator with a very wide bandwidth (B = F). A plain cascade of five resonators falls at 60 dB/oct
    above F5 (real tracts have more poles above); the ratio keeps each formant's peak (gain ~F/B) and its
    interaction with its neighbours, but is flat far from it. The spectral tilt comes from the source.
    """
    f2 = (freqs**2).astype(np.float32)[None, :]
    out = np.ones((formants.shape[0], freqs.size), np.float32)
    for i in range(formants.shape[1]):
        fi2 = (formants[:, i : i + 1] ** 2).astype(np.float32)
        d = (fi2 - f2) ** 2
        out *= np.sqrt((d + fi2 * f2) / (d + np.float32(bw[i] ** 2) * f2))
    return out


def rosenberg(ph: np.ndarray, oq: float, sq: float) -> np.ndarray:
    """Rosenberg glottal flow for phase ``ph`` (cycles): rises over oq*sq/(1+sq) of the period, falls over
    oq/(1+sq), closed for the rest. Returns (n,) float32 in [0, 1]."""
    p = ph % 1.0
    tp = oq * sq / (1 + sq)
    tn = oq / (1 + sq)
    g = np.where(p < tp, 0.5 * (1 - np.cos(np.pi * p / tp)), 0.0)
    closing = (p >= tp) & (p < tp + tn)
    g = np.where(closing, np.cos(0.5 * np.pi * (p - tp) / tn), g)
    return g.astype(np.float32)


# ----------------------------------------------------------------------------------------------- phrase


@dataclass
class _Frames:
    """The score of one phrase on the analysis frame grid (HOP samples per frame)."""

    midi: np.ndarray  # (nf,) target pitch, NaN in rests
    voiced: np.ndarray  # (nf,) glottal amplitude
    noise_lvl: np.ndarray  # (nf,) aspiration through the vocal tract (h, breath)
    form: np.ndarray  # (nf, 4) formant frequencies
    scoop: np.ndarray  # (nf,) pitch scoop into each note (semitones)
    vib_env: np.ndarray  # (nf,) vibrato depth envelope
    bursts: list[tuple[float, float, tuple[float, float], float]]  # (t0, t1, band, level) of noise bursts


def render_phrase(syllables: list[Any], length: float, singer: dict[str, Any], sr: int, rng: np.random.Generator,
                  inhale: float = 0.0) -> np.ndarray:  # fmt: skip
    """Sing one phrase: ``syllables`` (objects with t, dur, midi, onset, vowel, coda, vel; t from the phrase
    start) into a mono float32 array of exactly round(length * sr) samples (RMS ~0.1)."""
    n = int(round(length * sr))
    nf = n // HOP + 2
    tf = np.arange(nf) * HOP / sr  # frame times (s)
    fs = float(singer["formant_scale"])
    fr = _score_frames(syllables, inhale, tf, fs, sr, rng)
    f0 = _pitch_contour(fr, tf, singer, sr, rng)
    src = _glottal_source(f0, fr.voiced, tf, n, singer, sr, rng)
    y = _vocal_tract(src, fr, fs, n, singer, sr, rng)
    # short fades so the phrase window starts and ends at exactly zero without a click
    m = min(n // 4, int(0.005 * sr))
    if m > 0:
        ramp = np.linspace(0, 1, m, dtype=np.float32)
        y[:m] *= ramp
        y[-m:] *= ramp[::-1]
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) + 1e-9
    return (y * (0.1 / rms)).astype(np.float32)


def _score_frames(syllables: list[Any], inhale: float, tf: np.ndarray, fs: float, sr: int,
                  rng: np.random.Generator) -> _Frames:  # fmt: skip
    """Syllables -> per-frame pitch targets, voicing, formants, noises and consonant bursts."""
    nf = len(tf)
    midi = np.full(nf, np.nan)
    voiced = np.zeros(nf)
    noise_lvl = np.zeros(nf)
    form = np.tile(np.array(VOWEL_FORMANTS["uh"]) * fs, (nf, 1))
    scoop = np.zeros(nf)
    vib_env = np.zeros(nf)
    bursts: list[tuple[float, float, tuple[float, float], float]] = []

    def span(a: float, b: float) -> slice:
        return slice(max(0, int(np.floor(a * sr / HOP))), min(nf, int(np.ceil(b * sr / HOP))))

    for s in syllables:
        t0, t1 = s.t, s.t + s.dur
        on = CONSONANT_SPECS.get(s.onset) if s.onset else None
        co = CONSONANT_SPECS.get(s.coda) if s.coda else None
        v0 = t0 + (on["dur"] if on else 0.0)
        v1 = t1 - (co["dur"] if co else 0.0)
        if v1 - v0 < 0.04:  # very short notes: drop the coda rather than the vowel
            co, v1 = None, t1
        sl = span(t0, t1)
        midi[sl] = s.midi
        vs = span(v0, v1)
        form[vs] = np.array(VOWEL_FORMANTS[s.vowel]) * fs
        # note envelope: quick swell, slight decay, release at the end of the vowel
        tt = tf[vs] - v0
        env = np.minimum(1.0, tt / 0.04) * (1.0 - 0.15 * np.clip(tt / max(v1 - v0, 1e-3), 0, 1))
        voiced[vs] = np.maximum(voiced[vs], env * s.vel)
        scoop[vs] = -float(rng.uniform(0.3, 1.2)) * np.exp(-tt / 0.05) if rng.random() < 0.6 else 0.0
        vib_env[vs] = np.clip((tt - 0.25) / 0.3, 0, 1)
        for cons, c0, c1 in ((on, t0, v0), (co, v1, t1)):
            if cons is None:
                continue
            cs = span(c0, c1)
            voiced[cs] = cons["voice"] * s.vel
            if cons["kind"] == "murmur":
                form[cs] = np.array(cons["formants"]) * fs
            elif cons["kind"] == "asp":
                noise_lvl[cs] = cons["noise"] * s.vel
            elif cons["kind"] == "fric":
                bursts.append((c0, c1, cons["band"], cons["noise"] * s.vel))
            else:  # stop: closure (silence or voice bar), then a short burst + aspiration into the vowel
                rel = c1 - 0.018
                bursts.append((rel, c1, cons["band"], cons["noise"] * s.vel))
                if cons["voice"] == 0.0:
                    noise_lvl[span(rel, c1 + 0.02)] = 0.15 * s.vel
    if inhale > 0:
        noise_lvl[span(0.0, inhale)] = (
            np.sin(np.linspace(0, np.pi, len(range(*span(0.0, inhale).indices(nf))))) * 0.08
        )
    return _Frames(midi, voiced, noise_lvl, form, scoop, vib_env, bursts)


def _pitch_contour(sc: _Frames, tf: np.ndarray, singer: dict[str, Any], sr: int,
                   rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Frame f0 (Hz): pitch held through rests, portamento, scoops, vibrato, drift, jitter."""
    nf = len(tf)
    midi = sc.midi
    idx = np.where(np.isnan(midi), 0, np.arange(nf))
    np.maximum.accumulate(idx, out=idx)
    first = np.nanmin(midi) if np.any(~np.isnan(midi)) else 60.0
    midi = np.where(np.isnan(midi), first, midi)[idx] if np.any(~np.isnan(midi)) else np.full(nf, 60.0)
    glide = int(rng.integers(3, 9))  # 17-50 ms portamento
    pitch = _smooth(midi, glide) + sc.scoop
    fr = HOP / sr
    rate = singer["vibrato_rate"] * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * tf + rng.random() * 6))
    vib_phase = 2 * np.pi * np.cumsum(rate) * fr
    pitch = pitch + singer["vibrato_cents"] / 100 * sc.vib_env * np.sin(vib_phase)
    drift = _smooth(np.cumsum(rng.normal(0, 0.02, nf)), 25)
    pitch = (
        pitch + drift - drift.mean() + rng.normal(0, singer["jitter"] * 17.3, nf)
    )  # jitter: frac f0 -> semitones
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    return f0


def _glottal_source(f0: np.ndarray, voiced: np.ndarray, tf: np.ndarray, n: int, singer: dict[str, Any], sr: int,
                    rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Rosenberg glottal flow derivative at the frame f0, shaped by the voicing and breath noise: (n,)."""
    nf = len(tf)
    ts = np.arange(n) / sr
    f0_s = np.interp(ts, tf, f0)
    ph = np.cumsum(f0_s / sr)
    g = rosenberg(ph, singer["oq"], singer["sq"])
    dg = np.diff(g, prepend=g[0]) * (sr / (f0_s * 40.0))  # flow derivative, roughly f0-independent level
    amp = np.interp(ts, tf, _smooth(voiced, 3)) * (
        1 + rng.normal(0, 0.03, nf)[np.minimum(ts * sr // HOP, nf - 1).astype(int)]
    )
    breath = singer["breath"] * rng.standard_normal(n) * (0.3 + g)
    src = (amp * (dg + breath)).astype(np.float32)
    return src


def _vocal_tract(src: np.ndarray, fr: _Frames, fs: float, n: int, singer: dict[str, Any], sr: int,
                 rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Filter the source through the moving formants (STFT domain) and add aspiration and bursts: (n,)."""
    nf = len(fr.voiced)
    voiced, noise_lvl = fr.voiced, fr.noise_lvl

    def span(a: float, b: float) -> slice:
        return slice(max(0, int(np.floor(a * sr / HOP))), min(nf, int(np.ceil(b * sr / HOP))))

    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    form = _smooth(fr.form, 7)  # 40 ms formant transitions between syllables
    bw = BANDWIDTHS * (1 + singer["breath"])
    high = np.broadcast_to(np.array(HIGH_FORMANTS) * fs, (form.shape[0], len(HIGH_FORMANTS)))
    h = _resonators(freqs, np.concatenate([form, high], axis=1), bw)
    # Spectral tilt of real voices (~ -12 dB/oct above a few hundred Hz; brighter singers fall later) and the
    # "singer's formant" cluster near 3 kHz of trained voices.
    corner = 250.0 + 350.0 * singer["bright"]
    tilt = (1 + (freqs / corner) ** 2) ** -TILT
    ring = 1 + 0.5 * singer["ring"] * np.exp(-0.5 * ((freqs - 3000 * fs**0.3) / 400) ** 2)
    h *= (tilt * ring).astype(np.float32)[None, :]
    s_spec = stft(src)[: h.shape[0]]
    h = h[: s_spec.shape[0]]
    voiced_spec = s_spec * h
    # Calibrate noises against the sung vowels: a consonant of level 1 has the power of a typical vowel frame.
    frame_pow = np.sum(np.abs(voiced_spec) ** 2, axis=1)
    loud = frame_pow[_smooth(voiced, 3)[: len(frame_pow)] > 0.5]
    p_ref = float(np.median(loud)) if loud.size else float(frame_pow.max() + 1e-12)
    white = float(np.sum(_window() ** 2))  # E|N_k|^2 of unit white noise per bin
    noise = stft(rng.standard_normal(n).astype(np.float32))[: h.shape[0]]
    h_pow = np.sum(h**2, axis=1, keepdims=True)
    gain = h * np.sqrt(p_ref / (white * h_pow)) * _smooth(noise_lvl, 2)[: h.shape[0], None]
    for c0, c1, (lo, hi), lvl in fr.bursts:
        sl = span(c0, c1)
        m = sl.stop - sl.start
        if m <= 0:
            continue
        shape = 1.0 / np.sqrt((1 + (lo / np.maximum(freqs, 1.0)) ** 4) * (1 + (freqs / hi) ** 4))
        shape *= np.sqrt(p_ref / (white * np.sum(shape**2)))
        env = np.sin(np.linspace(0.3, np.pi - 0.3, m)) * lvl
        gain[sl] += env[:, None] * shape[None, :]
    return istft(voiced_spec + noise * gain, n)
