"""Where in frequency a model's vocal estimate leaks on songs with no voice: per-band energy of the estimate
relative to the mixture's, in dB, for each track of an evaluation set (e.g. one from instrumental_set.py).

0 dB in a band means the model passed that band of the music whole as "vocals"; the last column is the share of
the mixture's energy in the voice band (250 Hz - 4 kHz), to tell a model that takes a band for voice from a
song that has little else.

    python scripts/leakage_bands.py DATA [--subset test] [--model FILE] [--device cpu] [--tracks NAME ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bsmamba2 import audio
from bsmamba2.api import Separator

EDGES_HZ = (0, 125, 250, 500, 1000, 2000, 4000, 8000, 16000, 22050)
SR = 44100


def band_energies(x: np.ndarray, edges: tuple[int, ...] = EDGES_HZ, sample_rate: int = SR) -> np.ndarray:
    """Energy (summed over channels) of x (C, N) in each [edges[i], edges[i+1]) Hz band, from one long FFT."""
    power = (np.abs(np.fft.rfft(np.asarray(x, np.float64), axis=-1)) ** 2).sum(0)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sample_rate)
    return np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--subset", default="test")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tracks", nargs="*", default=None, help="track folder names (default: all)")
    a = ap.parse_args()
    root = a.data / a.subset
    names = a.tracks or sorted(p.name for p in root.iterdir() if (p / "mixture.wav").exists())
    sep = Separator.from_pretrained(a.model, device=a.device)
    bands = [f"{lo}-{hi}" for lo, hi in zip(EDGES_HZ[:-1], EDGES_HZ[1:])]
    width = max(len(n) for n in names)
    print("track".ljust(width), *(b.rjust(10) for b in bands), "voice-band share".rjust(17))
    for name in names:
        x, _ = audio.read(root / name / "mixture.wav", sample_rate=SR)
        vocals = sep.separate(x, SR)["vocals"].numpy()
        mix_e, voc_e = band_energies(x), band_energies(vocals)
        rel = 10 * np.log10(np.maximum(voc_e, 1e-30) / np.maximum(mix_e, 1e-30))
        share = band_energies(x, (250, 4000)).sum() / max(mix_e.sum(), 1e-30)
        print(name.ljust(width), *(f"{r:10.1f}" for r in rel), f"{share:17.2f}")


if __name__ == "__main__":
    main()
