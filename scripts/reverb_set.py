"""Copy a MUSDB18HQ-layout split with its accompaniment in a long room, to see whether reverberant music makes a
model hear a voice (vocal leakage, issue 14).

Every stem but ``vocals`` goes through :func:`bsmamba2.data.augment.reverberate` (the sampler's ``p_reverb``
room) with the RT60 and wet gain given; ``vocals.wav`` and ``meta.json`` are copied as they are, and
``mixture.wav`` is written as the sum of the new stems. Then score both splits with the same model::

    python scripts/reverb_set.py DATA OUT --rt60 3 --wet 0.7 [--subset test] [--seed 0]
    bsmamba2 evaluate --model MODEL --data OUT --subset test --out OUT/eval
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2.data import augment


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--subset", default="test")
    ap.add_argument("--rt60", type=float, default=3.0, help="room decay time in seconds (default 3)")
    ap.add_argument("--wet", type=float, default=0.7, help="wet gain (default 0.7)")
    ap.add_argument("--seed", type=int, default=0, help="impulse-response seed (track k uses seed + k)")
    a = ap.parse_args(argv)
    src = a.data / a.subset
    if not src.is_dir():
        raise SystemExit(f"reverb_set: {src}: no such folder")
    if not 0.05 <= a.rt60 <= 12 or not 0 <= a.wet <= 2:
        raise SystemExit("reverb_set: --rt60 must be in [0.05, 12] s and --wet in [0, 2]")
    tracks = sorted(p for p in src.iterdir() if (p / "vocals.wav").is_file())
    if not tracks:
        raise SystemExit(f"reverb_set: no track with a vocals.wav in {src}")
    dst = a.out / a.subset
    if dst.exists():
        raise SystemExit(f"reverb_set: {dst} exists; pick another OUT")
    for k, track in enumerate(tracks):
        (dst / track.name).mkdir(parents=True)
        mix: np.ndarray | None = None
        for f in sorted(track.glob("*.wav")):
            if f.stem == "mixture":
                continue
            x, rate = sf.read(f, dtype="float32", always_2d=True)
            if f.stem != "vocals":
                augment.reverberate(x, a.rt60, a.wet, rate, a.seed + k)
            sf.write(dst / track.name / f.name, x, rate, subtype="FLOAT")
            mix = x.copy() if mix is None else mix + x
        assert mix is not None  # vocals.wav is there
        sf.write(dst / track.name / "mixture.wav", mix, rate, subtype="FLOAT")
        if (track / "meta.json").is_file():
            shutil.copy2(track / "meta.json", dst / track.name / "meta.json")
    print(f"{len(tracks)} tracks in {dst} (RT60 {a.rt60:g} s, wet {a.wet:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
