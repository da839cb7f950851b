"""Instrument and drum synthesis for the synthetic corpus: one note in, one mono float32 array out.

Everything is vectorised NumPy: oscillators read band-limited wavetables through a phase accumulator, so a
note costs O(samples) whatever its harmonic content; a "subtractive" filter sweep is a crossfade between
tables rendered at several cutoffs (the lowpass is applied to the harmonic amplitudes, so there is no
per-sample IIR loop); Karplus-Strong runs one pitch period per NumPy step; noise is shaped in the frequency
domain. Each ``note_*`` function takes the pitch in Hz, the held duration in seconds, a velocity in (0, 1],
the sample rate, a Generator and its parameters, and returns the note including its release tail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

TABLE = 2048  # samples per wavetable period


# ----------------------------------------------------------------------------------------------- helpers


def midi_hz(m: float | np.ndarray) -> Any:
    return 440.0 * 2.0 ** ((np.asarray(m) - 69.0) / 12.0)


def phase(freq: np.ndarray | float, n: int, sr: int, start: float = 0.0) -> np.ndarray:
    """Cumulative phase in cycles (float64, (n,)) of a (possibly time-varying) frequency in Hz."""
    if np.ndim(freq) == 0:
        return start + np.arange(n) * (float(freq) / sr)  # type: ignore[arg-type]
    return start + np.cumsum(np.asarray(freq, np.float64) / sr) - float(np.asarray(freq)[0]) / sr


def harmonic_tables(amps: np.ndarray) -> np.ndarray:
    """Wavetables from harmonic amplitudes ``amps`` (L, K) (harmonic k+1 in column k): (L, TABLE + 1) with a
    wrap-around sample so linear interpolation needs no modulo. Sine phase; peak roughly normalised."""
    amps = np.atleast_2d(amps)
    k = min(amps.shape[1], TABLE // 2 - 1)
    spec = np.zeros((amps.shape[0], TABLE // 2 + 1), np.complex128)
    spec[:, 1 : k + 1] = -1j * amps[:, :k] * (TABLE / 2)
    tab = np.fft.irfft(spec, n=TABLE, axis=1)
    return np.concatenate([tab, tab[:, :1]], axis=1).astype(np.float32)


def table_read(tables: np.ndarray, ph: np.ndarray, pos: np.ndarray | float = 0.0) -> np.ndarray:
    """Read wavetables at phase ``ph`` (cycles, (n,)); ``pos`` in [0, L-1] crossfades between tables.

    ``pos`` must be a scalar or monotonic (a filter envelope): the note is cut into runs that use the same
    pair of tables, so each run does two 1-D table lookups instead of 2-D fancy indexing.
    """
    x = (ph % 1.0) * TABLE
    i = x.astype(np.int64)
    fr = (x - i).astype(np.float32)

    def read(t: np.ndarray, sl: slice) -> np.ndarray:
        ii, ff = i[sl], fr[sl]
        a = t[ii]
        return a + ff * (t[ii + 1] - a)

    top = tables.shape[0] - 1
    if np.ndim(pos) == 0:
        p0 = min(max(float(pos), 0.0), float(top))  # type: ignore[arg-type]
        l0 = min(int(p0), top - 1) if top else 0
        w = p0 - l0
        y = read(tables[l0], slice(None))
        return y if w < 1e-4 else (1 - w) * y + w * read(tables[l0 + 1], slice(None))
    p = np.clip(np.asarray(pos, np.float32), 0, top - 1e-3)
    lv = p.astype(np.int64)
    out = np.empty(ph.shape, np.float32)
    edges = np.flatnonzero(np.diff(lv)) + 1
    for a, b in zip(np.concatenate(([0], edges)), np.concatenate((edges, [len(lv)]))):
        sl = slice(int(a), int(b))
        lev = int(lv[a])
        ws = p[sl] - lev
        y0 = read(tables[lev], sl)
        out[sl] = y0 if float(ws.max()) < 1e-4 else y0 + ws * (read(tables[lev + 1], sl) - y0)
    return out


def wave_amps(kind: str, k: int) -> np.ndarray:
    """Harmonic amplitudes (k,) of a basic waveform."""
    h = np.arange(1, k + 1, dtype=np.float64)
    if kind == "saw":
        return 1.0 / h
    if kind == "square":
        return np.where(h % 2 == 1, 1.0 / h, 0.0)
    if kind == "triangle":
        return np.where(h % 2 == 1, (-1.0) ** ((h - 1) // 2) / h**2, 0.0)
    if kind == "pulse":  # 25 % duty
        return np.abs(np.sin(np.pi * h * 0.25)) / h
    if kind == "sine":
        return (h == 1).astype(np.float64)
    raise ValueError(f"unknown waveform {kind!r}")


def lowpass_gain(freqs: np.ndarray, cutoff: float, reso: float = 0.0, order: int = 2) -> np.ndarray:
    """Magnitude of a resonant lowpass at ``freqs`` (Hz): Butterworth-like slope plus a peak at the cutoff."""
    r = freqs / cutoff
    g = 1.0 / np.sqrt(1.0 + r ** (2 * order))
    return g * (1.0 + reso * np.exp(-0.5 * ((r - 1.0) / 0.12) ** 2))


def n_harmonics(f0: float, sr: int, ceiling: int = 200) -> int:
    """Harmonics below 0.45 sr (band-limiting, so tables do not alias)."""
    return int(max(1, min(ceiling, 0.45 * sr // max(f0, 1.0))))


def envelope(
    n: int, sr: int, attack: float, decay: float, sustain: float, release: float, held: float
) -> np.ndarray:
    """ADSR (n,) float32: linear attack, exponential decay to ``sustain``, exponential release after ``held`` s."""
    t = np.arange(n, dtype=np.float32) / sr
    a = max(attack, 1e-4)
    env = np.where(t < a, t / a, sustain + (1 - sustain) * np.exp(-(t - a) / max(decay, 1e-4)))
    off = min(held, n / sr)
    level_off = float(np.interp(off, t, env)) if n else 0.0
    rel = level_off * np.exp(
        -np.maximum(t - off, 0.0) / max(release / 4.0, 1e-4)
    )  # release = time to ~-35 dB
    return np.where(t < off, env, rel).astype(np.float32)


def shaped_noise(
    n: int, sr: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """White noise of length n filtered by the magnitude response ``gain(freqs_hz)`` (FFT domain)."""
    if n <= 0:
        return np.zeros(0, np.float32)
    m = 1 << int(np.ceil(np.log2(max(n, 16))))
    spec = np.fft.rfft(rng.standard_normal(m))
    spec *= gain(np.fft.rfftfreq(m, 1.0 / sr))
    return np.fft.irfft(spec, n=m)[:n].astype(np.float32)


def bandpass(lo: float, hi: float, order: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    def g(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)
        return 1.0 / np.sqrt((1 + (lo / f) ** (2 * order)) * (1 + (f / hi) ** (2 * order)))

    return g


def _release_len(dur: float, release: float, sr: int) -> int:
    return int((dur + release) * sr) + 1


# ----------------------------------------------------------------------------------------------- pitched


def note_subtractive(
    f0: float, dur: float, vel: float, sr: int, rng: np.random.Generator, p: dict[str, Any]
) -> np.ndarray:
    """Detuned band-limited oscillators through a resonant lowpass whose cutoff follows an envelope.

    p: wave, voices, detune (cents), cutoff (Hz), env_amount (octaves), filter_decay (s), reso,
    attack, decay, sustain, release, vibrato (cents), vibrato_rate (Hz), vibrato_delay (s).
    """
    n = _release_len(dur, p["release"], sr)
    t = np.arange(n, dtype=np.float32) / sr
    amp = envelope(n, sr, p["attack"], p["decay"], p["sustain"], p["release"], dur)
    k = n_harmonics(f0 * 1.03, sr)
    h = np.arange(1, k + 1) * f0
    # Filter tables from the base cutoff up by env_amount octaves; position follows the filter envelope.
    levels = 6
    cut = p["cutoff"] * (0.7 + 0.6 * vel) * 2.0 ** (np.linspace(0.0, p["env_amount"], levels))
    amps = wave_amps(p["wave"], k)[None, :] * np.stack([lowpass_gain(h, c, p["reso"]) for c in cut])
    tables = harmonic_tables(amps)
    pos = (levels - 1) * np.exp(-t / max(p["filter_decay"], 1e-3)) if p["env_amount"] > 0 else 0.0
    fm = np.ones(n, np.float32)
    if p.get("vibrato", 0.0) > 0:
        ramp = np.clip((t - p["vibrato_delay"]) / 0.3, 0, 1)
        fm = 2.0 ** (p["vibrato"] / 1200 * ramp * np.sin(2 * np.pi * p["vibrato_rate"] * t))
    out = np.zeros(n, np.float32)
    voices = int(p["voices"])
    for v in range(voices):
        cents = 0.0 if voices == 1 else p["detune"] * (2 * v / (voices - 1) - 1)
        ph = phase(f0 * 2 ** (cents / 1200) * fm, n, sr, start=float(rng.random()))
        out += table_read(tables, ph, pos)
    return out * amp * (vel / np.sqrt(voices))


def note_fm(
    f0: float, dur: float, vel: float, sr: int, rng: np.random.Generator, p: dict[str, Any]
) -> np.ndarray:
    """Two-operator FM: sin(2 pi f0 t + I(t) sin(2 pi ratio f0 t)), index decaying from ``index`` to
    ``index_end`` (electric pianos, bells, FM basses). p: ratio, index, index_end, index_decay, ADSR."""
    n = _release_len(dur, p["release"], sr)
    t = np.arange(n, dtype=np.float32) / sr
    amp = envelope(n, sr, p["attack"], p["decay"], p["sustain"], p["release"], dur)
    # Keep the modulator's sidebands under Nyquist: Carson's rule bandwidth ~ 2 (I + 1) f_mod.
    i_max = max(0.0, 0.45 * sr / (p["ratio"] * f0) - 1.0)
    idx = p["index_end"] + (p["index"] * (0.5 + vel) - p["index_end"]) * np.exp(-t / p["index_decay"])
    idx = np.minimum(idx, i_max)
    ph = phase(f0, n, sr)
    y = np.sin(2 * np.pi * ph + idx * np.sin(2 * np.pi * p["ratio"] * ph)).astype(np.float32)
    return y * amp * vel


def note_additive(
    f0: float, dur: float, vel: float, sr: int, rng: np.random.Generator, p: dict[str, Any]
) -> np.ndarray:
    """Additive tones: a bright attack table fading into a darker sustain table (pianos, organs, mallets).
    p: harmonics (amplitudes of partials 1..K), bright (extra high-partial boost at the attack),
    tone_decay (s), tremolo (depth), tremolo_rate, ADSR, hammer (noise level at onset)."""
    n = _release_len(dur, p["release"], sr)
    t = np.arange(n, dtype=np.float32) / sr
    amp = envelope(n, sr, p["attack"], p["decay"], p["sustain"], p["release"], dur)
    base = np.asarray(p["harmonics"], np.float64)
    k = min(len(base), n_harmonics(f0, sr))
    h = np.arange(1, k + 1)
    dark = base[:k] * lowpass_gain(h * f0, p.get("cutoff", 4000.0))
    bright = base[:k] * (1 + p["bright"] * (h - 1) / max(k - 1, 1))
    tables = harmonic_tables(np.stack([dark, bright]))
    pos = np.exp(-t / p["tone_decay"]) if p["bright"] > 0 else 0.0
    y = table_read(tables, phase(f0, n, sr, float(rng.random())), pos)
    if p.get("tremolo", 0.0) > 0:
        y = y * (1 - p["tremolo"] * 0.5 * (1 + np.sin(2 * np.pi * p["tremolo_rate"] * t)))
    if p.get("hammer", 0.0) > 0:
        m = min(n, int(0.02 * sr))
        y[:m] += (
            p["hammer"]
            * shaped_noise(m, sr, rng, bandpass(f0, 6000.0))
            * np.exp(-np.arange(m) / (0.004 * sr))
        )
    return (y * amp * vel).astype(np.float32)


def karplus_strong(
    f0: float, n: int, sr: int, rng: np.random.Generator, brightness: float, decay: float
) -> np.ndarray:
    """Plucked string: y[i] = g * (y[i-P] + y[i-P-1]) / 2, computed one period (P samples) per NumPy step.

    The loop's period is P + 1/2 samples (the averaging filter delays by half a sample); an integer P makes
    the pitch slightly sharp, so the string is rendered at that rate and stretched by linear interpolation
    to the exact pitch. ``brightness`` in (0, 1] lowpasses the excitation;
    ``decay`` is the time (s) to fall by 60 dB.
    """
    period = sr / f0
    # The two-point average in the loop delays by half a sample: the loop period is P + 0.5.
    p = max(2, int(period - 0.5))
    stretch = period / (p + 0.5)  # >= 1: render at the integer delay, then stretch to the exact pitch
    m = int(n / stretch) + p + 2
    blocks = m // p + 2
    exc = rng.uniform(-1, 1, p)
    # One-zero smoothing of the excitation: darker plucks for lower brightness (no loop needed).
    for _ in range(int(round((1 - brightness) * 6))):
        exc = 0.5 * (exc + np.roll(exc, 1))
    exc -= exc.mean()
    # Loop gain per period for a 60 dB decay over `decay` seconds (at the rendered rate).
    g = 10 ** (-3.0 / max(decay * f0, 1e-3))
    buf = np.zeros((blocks, p), np.float64)
    buf[0] = exc
    prev_last = 0.0
    for b in range(1, blocks):
        y = buf[b - 1]
        shifted = np.concatenate(([prev_last], y[:-1]))  # y[i - P - 1]
        prev_last = y[-1]
        buf[b] = g * 0.5 * (y + shifted)
    flat = buf.reshape(-1)
    src = np.arange(n) / stretch
    return np.interp(src, np.arange(flat.size), flat).astype(np.float32)


def note_pluck(
    f0: float, dur: float, vel: float, sr: int, rng: np.random.Generator, p: dict[str, Any]
) -> np.ndarray:
    """Plucked string (guitar, finger bass, harp) with a damping release. p: brightness, decay, release, body."""
    n = _release_len(dur, p["release"], sr)
    y = karplus_strong(f0, n, sr, rng, min(1.0, p["brightness"] * (0.6 + 0.5 * vel)), p["decay"])
    t = np.arange(n, dtype=np.float32) / sr
    damp = np.exp(-np.maximum(t - dur, 0.0) / max(p["release"] / 4, 1e-3)).astype(np.float32)
    y *= damp
    m = min(n, int(0.003 * sr))  # a few ms fade-in: softens the pick click
    y[:m] *= np.linspace(0, 1, m, dtype=np.float32)
    return y * vel * 1.5


PITCHED: dict[str, Callable[..., np.ndarray]] = {
    "subtractive": note_subtractive,
    "fm": note_fm,
    "additive": note_additive,
    "pluck": note_pluck,
}


def render_note(
    engine: str, midi: float, dur: float, vel: float, sr: int, rng: np.random.Generator, p: dict[str, Any]
) -> np.ndarray:
    """One pitched note (mono float32) with engine "subtractive" | "fm" | "additive" | "pluck"."""
    return PITCHED[engine](float(midi_hz(midi)), dur, vel, sr, rng, p)


# ----------------------------------------------------------------------------------------------- drums


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n, dtype=np.float32) / (tau * sr))


def _metal(n: int, sr: int, base: float, rng: np.random.Generator) -> np.ndarray:
    """Inharmonic cluster of square waves (the classic cymbal recipe), band-limited via FFT later."""
    ratios = np.array([1.0, 1.483, 1.932, 2.546, 2.63, 3.897]) * rng.uniform(0.95, 1.05, 6)
    t = np.arange(n) / sr
    return (
        np.sum(np.sign(np.sin(2 * np.pi * base * ratios[:, None] * t + rng.random((6, 1)) * 6.28)), axis=0)
        / 6
    )


def _highpass_fft(x: np.ndarray, sr: int, lo: float, hi: float = 18000.0) -> np.ndarray:
    m = 1 << int(np.ceil(np.log2(max(len(x), 16))))
    spec = np.fft.rfft(x, n=m) * bandpass(lo, hi)(np.fft.rfftfreq(m, 1 / sr))
    return np.fft.irfft(spec, n=m)[: len(x)].astype(np.float32)


def drum_sound(piece: str, sr: int, rng: np.random.Generator, p: dict[str, float]) -> np.ndarray:
    """One hit of a drum-kit piece (mono float32, peak ~1). ``p``: the kit's tuning (see composer.make_kit).

    pieces: kick, snare, clap, rim, hat, open_hat, ride, crash, tom_lo, tom_mid, tom_hi, shaker.
    """
    if piece == "kick":
        n = int(p["kick_len"] * sr)
        t = np.arange(n) / sr
        f = p["kick_f1"] + (p["kick_f0"] - p["kick_f1"]) * np.exp(-t / p["kick_sweep"])
        body = np.sin(2 * np.pi * phase(f, n, sr)) * _decay(n, sr, p["kick_len"] / 4)
        click = shaped_noise(n, sr, rng, bandpass(1500, 9000)) * _decay(n, sr, 0.003) * p["kick_click"]
        y = np.tanh(p["kick_drive"] * (body + click)) / np.tanh(p["kick_drive"])
    elif piece in ("snare", "rim"):
        n = int((0.35 if piece == "snare" else 0.08) * sr)
        t = np.arange(n) / sr
        tone = (
            np.sin(2 * np.pi * p["snare_f"] * t) + 0.5 * np.sin(2 * np.pi * p["snare_f"] * 1.6 * t)
        ) * _decay(n, sr, 0.04)
        if piece == "rim":
            y = 0.6 * np.sin(2 * np.pi * 1700 * t) * _decay(n, sr, 0.008) + 0.4 * tone * _decay(n, sr, 0.01)
        else:
            noise = shaped_noise(n, sr, rng, bandpass(p["snare_lo"], 9000)) * _decay(n, sr, p["snare_decay"])
            y = 0.5 * tone + p["snare_snap"] * noise / (np.abs(noise).max() + 1e-9)
    elif piece == "clap":
        n = int(0.4 * sr)
        env = np.zeros(n, np.float32)
        for j in range(4):  # several hands a few ms apart, then a diffuse tail
            s = int(j * 0.011 * sr)
            env[s:] += _decay(n - s, sr, 0.006 if j < 3 else 0.12)
        y = shaped_noise(n, sr, rng, bandpass(900, 3500)) * env
    elif piece in ("hat", "open_hat", "shaker"):
        n = int((p["hat_decay"] * (8 if piece == "open_hat" else 1) + 0.02) * sr)
        if piece == "shaker":
            y = shaped_noise(n, sr, rng, bandpass(4000, 14000)) * np.sin(np.linspace(0, np.pi, n)) ** 2
        else:
            raw = 0.6 * _metal(n, sr, p["metal_f"], rng) + 0.5 * rng.standard_normal(n)
            tau = p["hat_decay"] * (3.0 if piece == "open_hat" else 0.35)
            y = _highpass_fft(raw * _decay(n, sr, tau), sr, p["hat_lo"])
    elif piece in ("ride", "crash"):
        n = int((2.5 if piece == "crash" else 1.6) * sr)
        raw = (0.7 if piece == "ride" else 0.4) * _metal(
            n, sr, p["metal_f"] * 0.8, rng
        ) + rng.standard_normal(n) * (0.3 if piece == "ride" else 0.8)
        y = _highpass_fft(
            raw * _decay(n, sr, 0.5 if piece == "crash" else 0.35), sr, 3000 if piece == "ride" else 1500
        )
    elif piece.startswith("tom"):
        n = int(0.6 * sr)
        f0 = p["tom_f"] * {"tom_lo": 1.0, "tom_mid": 1.33, "tom_hi": 1.78}[piece]
        t = np.arange(n) / sr
        f = f0 * (1 + 0.5 * np.exp(-t / 0.03))
        y = np.sin(2 * np.pi * phase(f, n, sr)) * _decay(n, sr, 0.15) + 0.15 * shaped_noise(
            n, sr, rng, bandpass(200, 4000)
        ) * _decay(n, sr, 0.03)
    else:
        raise ValueError(f"unknown drum piece {piece!r}")
    y = np.asarray(y, np.float32)
    return y / (np.abs(y).max() + 1e-9)
