"""The demo: separate an example song with the bundled model, offline, and score the result.

The command is ``bsmamba2 demo`` (:mod:`bsmamba2.cli.demo`); this is its library part. The default example
(preset ``v2``) is a 20 s corpus-v2 song shipped in the package (``assets/example_v2.flac``: SoundFont
instruments, Hydrogen drums, a sung Kokoro voice in two short phrases; 16-bit FLAC, mixture and true vocals),
because that engine needs a SoundFont and a voice bank a fresh install does not have. The other presets
generate a ``seconds``-long song with the built-in synthesizer (``bsmamba2.data.synth``; "sparse": short
phrases with long instrumental gaps, the case the paper is about), identical on every machine for a given
seed. :func:`run_demo` writes::

    OUT/example_mixture.wav               the input (float WAV)
    OUT/example_true_vocals.wav           the synthesizer's vocal stem: the answer
    OUT/example_mixture/vocals.wav        the model's estimate (Separator.separate_file layout)
    OUT/example_mixture/instrumental.wav  mixture - vocals
    OUT/spectrograms.png                  mixture / estimated vocals / true vocals (needs matplotlib)
    OUT/metrics.json                      the numbers: the uSDR of the estimated vocals against the true
                                          ones, next to the do-nothing baseline (the mixture as estimate)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba2 import audio
from bsmamba2.api import Separator
from bsmamba2.atomic import atomic_write
from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.errors import UserError
from bsmamba2.plots import save_spectrograms

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 20.0
DEFAULT_SEED = 2025
DEFAULT_PRESET = "v2"
EXAMPLE_V2 = Path(__file__).parent / "assets" / "example_v2.flac"  # (N, 4): mixture L R, vocals L R


def make_example(
    seconds: float, preset: str, seed: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """(mixture (2, N), true vocals (2, N), vocal phrases [(start s, end s)]), deterministic in the arguments.

    ``preset`` "v2": the shipped corpus-v2 song, cut to ``seconds`` (at most its 20 s; ``seed`` unused)."""
    if preset == "v2":
        return _shipped_example(seconds)
    from bsmamba2.data.synth import synthesize_track  # the synthesizer is only needed here

    stems, meta = synthesize_track(seconds, preset, seed, MODEL_SAMPLE_RATE)
    mix = np.asarray(np.sum(np.stack(list(stems.values())), axis=0, dtype=np.float32))  # (2, N)
    phrases = [(float(p["start"]), float(p["end"])) for p in meta.get("phrases", [])]
    return mix, stems["vocals"], phrases


def _shipped_example(seconds: float) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    x, rate = audio.read(EXAMPLE_V2)  # (4, N)
    meta = json.loads(EXAMPLE_V2.with_suffix(".json").read_text())
    n = min(x.shape[-1], max(1, round(seconds * rate)))
    phrases = [(float(a), min(float(b), n / rate)) for a, b in meta["phrases"] if a < n / rate]
    return np.ascontiguousarray(x[:2, :n]), np.ascontiguousarray(x[2:, :n]), phrases


def score(reference: np.ndarray, estimate: np.ndarray, mixture: np.ndarray) -> dict[str, float | None]:
    """uSDR (dB) of the estimate and of the mixture-as-estimate against the reference; None when the
    reference is silent (uSDR is then meaningless)."""
    from bsmamba2.evaluate.metrics import usdr

    if not np.any(reference):
        return {"usdr": None, "usdr_mixture": None, "improvement": None}
    u, m = usdr(reference, estimate), usdr(reference, mixture)
    return {"usdr": u, "usdr_mixture": m, "improvement": u - m}


def run_demo(
    sep: Separator,
    out: Path,
    *,
    seconds: float = DEFAULT_SECONDS,
    preset: str = DEFAULT_PRESET,
    seed: int = DEFAULT_SEED,
    plot: bool = True,
    model_name: str = "bundled default",
) -> dict[str, Any]:
    """Make the example, separate it with ``sep``, score it and write everything under ``out`` (see the
    module docstring); returns what ``OUT/metrics.json`` holds."""
    mix, vocals, phrases = make_example(seconds, preset, seed)
    mix_path = audio.write(out / "example_mixture.wav", mix, MODEL_SAMPLE_RATE, subtype="float")
    audio.write(out / "example_true_vocals.wav", vocals, MODEL_SAMPLE_RATE, subtype="float")
    paths = sep.separate_file(mix_path, out, bit_depth="float", overwrite=True)  # OUT/<stem>/
    est, _ = audio.read(paths["vocals"])  # (2, N)

    result: dict[str, Any] = {
        "model": model_name,
        "example": {"seconds": seconds, "preset": preset, "seed": seed, "phrases": phrases},
        **score(vocals, est, mix),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    if plot:
        try:
            png = save_spectrograms(
                out / "spectrograms.png",
                {"mixture": mix, "estimated vocals": est, "true vocals": vocals},
                MODEL_SAMPLE_RATE,
                title="bsmamba2 demo (cyan: true vocal phrases)",
                regions=phrases,
            )
            result["outputs"]["spectrograms"] = str(png)
        except UserError as e:  # no matplotlib: the audio and numbers are still useful
            log.warning("%s; skipped the PNG", e)
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def report_lines(result: dict[str, Any]) -> list[str]:
    """What the command prints: the outputs, then the uSDR line."""
    lines = [f"{name:>12}: {p}" for name, p in result["outputs"].items() if name != "spectrograms"]
    if result["usdr"] is None:
        lines.append(
            "the example has no vocals at these settings: no uSDR (try another --seed or a longer --seconds)"
        )
    else:
        lines.append(
            f"vocals uSDR: {_db(result['usdr'])} (mixture as estimate: {_db(result['usdr_mixture'])}, "
            f"improvement {_db(result['improvement'], sign=True)})"
        )
    return lines


def _db(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.2f} dB" if sign else f"{x:.2f} dB"
