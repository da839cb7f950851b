"""``bsmamba2 demo``: separate an example song with the bundled model, offline, and score the result.

    bsmamba2 demo -o demo_out                       # what `make demo` runs
    bsmamba2 demo -o demo_out --model my.safetensors --seconds 10

The example is generated, not downloaded: a ``--seconds``-long song from the project's synthesizer
(``bsmamba2.data.synth``, "sparse" vocals: short phrases with long instrumental gaps, the case the paper is
about), identical on every machine for a given seed. Writes::

    OUT/example_mixture.wav               the input (float WAV)
    OUT/example_true_vocals.wav           the synthesizer's vocal stem: the answer
    OUT/example_mixture/vocals.wav        the model's estimate (Separator.separate_file layout)
    OUT/example_mixture/instrumental.wav  mixture - vocals
    OUT/spectrograms.png                  mixture / estimated vocals / true vocals (needs matplotlib)
    OUT/metrics.json                      the numbers printed below

and prints the uSDR of the estimated vocals against the true ones, next to the do-nothing baseline (the
mixture itself as the estimate).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba2 import audio
from bsmamba2.atomic import atomic_write
from bsmamba2.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 20.0
DEFAULT_SEED = 2025
DEFAULT_PRESET = "sparse"
SAMPLE_RATE = 44100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)"
    )
    parser.add_argument("-m", "--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help=f"example length (default {DEFAULT_SECONDS:g})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"example seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--preset", default=DEFAULT_PRESET,
        help=f"vocal sparsity of the example: sparse | medium | dense | mixed (default {DEFAULT_PRESET})",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    parser.add_argument("--no-plot", action="store_true", help="skip the spectrogram PNG")


def make_example(
    seconds: float, preset: str, seed: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """(mixture (2, N), true vocals (2, N), vocal phrases [(start s, end s)]), deterministic in the arguments."""
    from bsmamba2.data.synth import synthesize_track  # the synthesizer is only needed here

    stems, meta = synthesize_track(seconds, preset, seed, SAMPLE_RATE)
    mix = np.asarray(np.sum(np.stack(list(stems.values())), axis=0, dtype=np.float32))  # (2, N)
    phrases = [(float(p["start"]), float(p["end"])) for p in meta.get("phrases", [])]
    return mix, stems["vocals"], phrases


def score(reference: np.ndarray, estimate: np.ndarray, mixture: np.ndarray) -> dict[str, float | None]:
    """uSDR (dB) of the estimate and of the mixture-as-estimate against the reference; None when the
    reference is silent (uSDR is then meaningless)."""
    from bsmamba2.evaluate.metrics import usdr

    if not np.any(reference):
        return {"usdr": None, "usdr_mixture": None, "improvement": None}
    u, m = usdr(reference, estimate), usdr(reference, mixture)
    return {"usdr": u, "usdr_mixture": m, "improvement": u - m}


def run(args: argparse.Namespace) -> int:
    from bsmamba2.api import Separator  # torch and the model stack: only once the arguments are valid

    if args.seconds <= 0:
        raise UserError(f"--seconds must be positive, got {args.seconds}")
    out: Path = args.out
    # Load the model first: a missing bundled model should fail before any work.
    sep = Separator.from_pretrained(args.model, device=args.device, precision=args.precision)

    mix, vocals, phrases = make_example(args.seconds, args.preset, args.seed)
    mix_path = audio.write(out / "example_mixture.wav", mix, SAMPLE_RATE, subtype="float")
    audio.write(out / "example_true_vocals.wav", vocals, SAMPLE_RATE, subtype="float")
    paths = sep.separate_file(mix_path, out / mix_path.stem, bit_depth="float", overwrite=True)
    est, _ = audio.read(paths["vocals"])  # (2, N)

    result: dict[str, Any] = {
        "model": str(args.model or "bundled default"),
        "example": {"seconds": args.seconds, "preset": args.preset, "seed": args.seed, "phrases": phrases},
        **score(vocals, est, mix),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    if not args.no_plot:
        try:
            from bsmamba2.plots import save_spectrograms

            png = save_spectrograms(
                out / "spectrograms.png",
                {"mixture": mix, "estimated vocals": est, "true vocals": vocals},
                SAMPLE_RATE,
                title="bsmamba2 demo (cyan: true vocal phrases)",
                regions=phrases,
            )
            result["outputs"]["spectrograms"] = str(png)
        except UserError as e:  # no matplotlib: the audio and numbers are still useful
            log.warning("%s; skipped the PNG", e)
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))

    for name, p in paths.items():
        print(f"{name:>12}: {p}")
    if result["usdr"] is None:
        print(
            "the example has no vocals at these settings: no uSDR (try another --seed or a longer --seconds)"
        )
    else:
        print(
            f"vocals uSDR: {_db(result['usdr'])} (mixture as estimate: {_db(result['usdr_mixture'])}, "
            f"improvement {_db(result['improvement'], sign=True)})"
        )
    return 0


def _db(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.2f} dB" if sign else f"{x:.2f} dB"
