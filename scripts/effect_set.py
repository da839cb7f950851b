"""Copy a MUSDB18HQ-layout split with one or more production effects applied, to see which of them makes a model
hear a voice in music (vocal leakage, issue 14).

Effects, applied in this order (at least one is required):

- ``--rt60 R --wet W``: every stem but ``vocals`` in a long room, through
  :func:`bsmamba2.data.augment.reverberate` (the sampler's ``p_reverb`` room);
- ``--drive DB``: every stem but ``vocals`` through a tanh saturator with DB of gain in front, then scaled back
  to its own RMS (a distorted instrument);
- ``--lowpass HZ``: every stem through a brick-wall low-pass at HZ (a band-limited encoding);
- ``--mono``: every stem folded to mono, (L + R) / 2 on both channels (a mono recording);
- ``--gain DB``: every stem scaled by DB (the whole song louder or quieter).

``meta.json`` is copied as it is and ``mixture.wav`` is written as the sum of the new stems. Then score both
splits with the same model::

    python scripts/effect_set.py DATA OUT --rt60 3 --wet 0.7 [--mono] [--subset test] [--seed 0]
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


def _drive(x: np.ndarray, db: float) -> None:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms == 0.0:
        return
    y = np.tanh(x * np.float32(10 ** (db / 20) / (np.abs(x).max() + 1e-12)))
    x[:] = y * np.float32(rms / max(float(np.sqrt(np.mean(y.astype(np.float64) ** 2))), 1e-12))


def _lowpass(x: np.ndarray, hz: float, rate: int) -> None:
    spec = np.fft.rfft(x, axis=0)
    spec[np.fft.rfftfreq(x.shape[0], 1.0 / rate) > hz] = 0.0
    x[:] = np.fft.irfft(spec, x.shape[0], axis=0).astype(np.float32)


def process(x: np.ndarray, stem: str, rate: int, a: argparse.Namespace, seed: int) -> None:
    """Apply the chosen effects to one stem's (N, C) float32 audio in place."""
    if stem != "vocals":
        if a.rt60 is not None:
            augment.reverberate(x, a.rt60, a.wet, rate, seed)
        if a.drive is not None:
            _drive(x, a.drive)
    if a.lowpass is not None:
        _lowpass(x, a.lowpass, rate)
    if a.mono:
        x[:] = x.mean(axis=1, keepdims=True)
    if a.gain is not None:
        x *= np.float32(10 ** (a.gain / 20))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--subset", default="test")
    ap.add_argument("--rt60", type=float, help="room decay time in seconds, 0.05 to 12 (default: no room)")
    ap.add_argument("--wet", type=float, default=0.7, help="the room's wet gain (default 0.7)")
    ap.add_argument("--drive", type=float, help="saturator gain in dB, 0 to 40 (default: none)")
    ap.add_argument("--lowpass", type=float, help="low-pass cutoff in Hz (default: none)")
    ap.add_argument("--mono", action="store_true", help="fold every stem to mono")
    ap.add_argument("--gain", type=float, help="scale the whole song by this many dB (default: none)")
    ap.add_argument("--seed", type=int, default=0, help="impulse-response seed (track k uses seed + k)")
    a = ap.parse_args(argv)
    src = a.data / a.subset
    if not src.is_dir():
        raise SystemExit(f"effect_set: {src}: no such folder")
    if a.rt60 is None and a.drive is None and a.lowpass is None and not a.mono and a.gain is None:
        raise SystemExit(
            "effect_set: choose at least one effect (--rt60, --drive, --lowpass, --mono, --gain)"
        )
    if a.rt60 is not None and (not 0.05 <= a.rt60 <= 12 or not 0 <= a.wet <= 2):
        raise SystemExit("effect_set: --rt60 must be in [0.05, 12] s and --wet in [0, 2]")
    if a.drive is not None and not 0 <= a.drive <= 40:
        raise SystemExit("effect_set: --drive must be in [0, 40] dB")
    if a.lowpass is not None and a.lowpass <= 0:
        raise SystemExit("effect_set: --lowpass must be a positive frequency in Hz")
    tracks = sorted(p for p in src.iterdir() if (p / "vocals.wav").is_file())
    if not tracks:
        raise SystemExit(f"effect_set: no track with a vocals.wav in {src}")
    dst = a.out / a.subset
    if dst.exists():
        raise SystemExit(f"effect_set: {dst} exists; pick another OUT")
    for k, track in enumerate(tracks):
        (dst / track.name).mkdir(parents=True)
        mix: np.ndarray | None = None
        for f in sorted(track.glob("*.wav")):
            if f.stem == "mixture":
                continue
            x, rate = sf.read(f, dtype="float32", always_2d=True)
            process(x, f.stem, rate, a, a.seed + k)
            sf.write(dst / track.name / f.name, x, rate, subtype="FLOAT")
            mix = x.copy() if mix is None else mix + x
        assert mix is not None  # vocals.wav is there
        sf.write(dst / track.name / "mixture.wav", mix, rate, subtype="FLOAT")
        if (track / "meta.json").is_file():
            shutil.copy2(track / "meta.json", dst / track.name / "meta.json")
    print(f"{len(tracks)} tracks in {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
