"""Spectrogram PNGs for the page, drawn with NumPy and zlib (the web extra does not need matplotlib).

The dB maths is :func:`bsmamba2.plots.spectrogram_db` (mel bins); here it is only coloured and encoded.
Every image of one job shares one dB scale (the loudest bin of all, down ``dynamic_range``), so quieter
vocals look quieter than the mixture.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bsmamba2.atomic import atomic_write
from bsmamba2.plots import spectrogram_db

MAX_FRAMES = 1000  # image width in pixels: the hop grows with the song so the picture stays this wide
N_FFT = 2048
N_MELS = 128
# A dark-to-bright ramp (black, purple, magenta, orange, pale yellow), like matplotlib's "magma"
RAMP = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], np.float64)


def write_spectrograms(
    signals: Mapping[str, np.ndarray], sample_rate: int, out_dir: Path, *, dynamic_range: float = 80.0
) -> dict[str, Path]:
    """One PNG per signal ({label: (C, N) or (N,)}) at ``out_dir/<label>.png``; returns {label: path}.

    Each image is (128 mel bins, <= MAX_FRAMES frames), low frequencies at the bottom.
    """
    length = max(np.asarray(x).shape[-1] for x in signals.values())
    hop = max(N_FFT // 4, math.ceil(length / MAX_FRAMES))
    specs = {
        k: spectrogram_db(x, sample_rate, n_fft=N_FFT, hop=hop, n_mels=N_MELS) for k, x in signals.items()
    }
    vmax = max(float(s.max()) for s in specs.values())
    out: dict[str, Path] = {}
    for label, s in specs.items():
        level = np.clip((s - (vmax - dynamic_range)) / dynamic_range, 0.0, 1.0)  # (bins, frames) in [0, 1]
        rgb = colorize(level[::-1])  # row 0 is the top of a PNG: highest bin first
        path = out_dir / f"{label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_bytes(encode_png(rgb))
        out[label] = path
    return out


def colorize(level: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours along ``RAMP``."""
    stops = np.linspace(0.0, 1.0, len(RAMP))
    rgb = np.stack([np.interp(level, stops, RAMP[:, c]) for c in range(3)], axis=-1)  # (H, W, 3)
    return np.round(rgb).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> the bytes of an 8-bit RGB PNG (one IDAT chunk, no filtering)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"need (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    rows = np.concatenate(
        [np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1
    )  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB), no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
