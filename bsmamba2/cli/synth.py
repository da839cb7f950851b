"""``bsmamba2 synth``: write a synthetic multitrack corpus in MUSDB18HQ layout."""

from __future__ import annotations

import argparse

from bsmamba2.data.synth.phrasing import PRESET_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (gets train/, valid/, test/ and corpus.json)")
    parser.add_argument("--train", type=int, default=20, help="number of training tracks (default 20)")
    parser.add_argument("--valid", type=int, default=4, help="number of validation tracks (default 4)")
    parser.add_argument("--test", type=int, default=4, help="number of test tracks (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of each track in seconds (default 30)"
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default="mixed",
                        help="vocal sparsity: phrase lengths and gaps (default mixed)")  # fmt: skip
    parser.add_argument("--engine", choices=("osc", "samples"), default="osc",
                        help="osc: oscillator/formant synthesis (default); samples: SoundFont instruments, "
                        "Hydrogen drum kits and sung Kokoro phrases (needs --assets)")  # fmt: skip
    parser.add_argument("--assets", default=None,
                        help="samples engine: folder with the SoundFont, drumkits/ and vocals/ "
                        "(written by scripts/build_corpus_v2.py)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="corpus seed; same seed, same corpus (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--sample-rate", type=int, default=44100, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bsmamba2.data.synth import synthesize_corpus

    out = synthesize_corpus(args.out, args.train, args.valid, args.test, seconds=args.seconds, preset=args.preset,
                            seed=args.seed, workers=args.workers, progress=not args.quiet, sample_rate=args.sample_rate,
                            engine=args.engine, assets=args.assets)  # fmt: skip
    print(out)
    return 0
