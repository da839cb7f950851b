"""Source activity detection (SAD): which training windows of a stem are "active enough" to be used.

The official rule (OFFICIAL_SPEC §6), for one stem and one window of ``segment`` seconds:

1. split the window into ten sub-chunks; 2. RMS per sub-chunk and channel, zeros become 1e-5;
3. threshold per channel = max(15 % quantile of the ten RMS values, ``floor``) with floor 1e-3;
4. keep the window if, in *every* channel, more than half of the sub-chunks exceed the threshold.

The official code evaluates windows on a 4 s hop. We evaluate them on a 0.1 s grid from a table of
per-0.1 s mean-square power (one pass over each file, cached on disk), so that training offsets stay
(almost) as random as without SAD: the sampler draws an allowed grid start and adds a random sub-grid
jitter. On grid-aligned windows the decision equals the official one exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bsmamba2 import audio
from bsmamba2.data import cache

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.1  # activity grid; also the resolution of SAD window starts
N_SUB = 10  # sub-chunks per window (official)
QUANTILE = 0.15  # official
DEFAULT_FLOOR = 1e-3  # official lower bound of the threshold
_BLOCK_SECONDS = 60.0  # files are read in blocks so a long track is never loaded whole


def frame_hop(sample_rate: int) -> int:
    """Samples per activity frame at the file's own rate."""
    return int(round(FRAME_SECONDS * sample_rate))


def frame_power(x: np.ndarray, hop: int) -> np.ndarray:
    """Mean-square power per frame: (C, N) -> (C, N // hop) float32 (a trailing partial frame is dropped)."""
    f = x.shape[1] // hop
    x64 = x[:, : f * hop].astype(np.float64).reshape(x.shape[0], f, hop)
    return np.mean(x64 * x64, axis=2).astype(np.float32)


def file_power(path: Path, root: Path | None = None) -> np.ndarray:
    """Per-0.1 s mean-square power of a sound file, (C, F) float32, read block by block and cached."""
    cdir = cache.cache_dir(root) if root is not None else None
    cpath = None
    if cdir is not None:
        cpath = cdir / "power" / f"{cache.key_digest(cache.file_key(path))}.npy"
        hit = cache.load_array(cpath)
        if hit is not None:
            return hit
    h = audio.info(path)
    hop = frame_hop(h.sample_rate)
    block = max(1, int(_BLOCK_SECONDS / FRAME_SECONDS)) * hop
    parts = []
    for start in range(0, h.frames - hop + 1, block):
        x, _ = audio.read(path, start=start, frames=min(block, h.frames - start))
        parts.append(frame_power(x, hop))
    p = np.concatenate(parts, axis=1) if parts else np.zeros((h.channels, 0), np.float32)
    if cpath is not None:
        cpath.parent.mkdir(exist_ok=True)
        cache.save_array(cpath, p)
    return p


def window_frames(segment_seconds: float) -> tuple[int, int]:
    """(frames per sub-chunk, sub-chunks per window) on the 0.1 s grid for a window of ``segment_seconds``."""
    w = max(1, int(round(segment_seconds / FRAME_SECONDS)))
    n_sub = min(N_SUB, w)
    return w // n_sub, n_sub


def active_starts(power: np.ndarray, segment_seconds: float, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Grid indices k where the window starting at frame k passes SAD. power: (C, F) -> int32 (K,).

    Works on any number of channels (a mono file is judged on its one channel, like its duplicated copy).
    """
    sub, n_sub = window_frames(segment_seconds)
    c, f = power.shape
    n_win = f - sub * n_sub + 1
    if n_win <= 0:
        return np.zeros(0, np.int32)
    # Mean power of every run of `sub` frames, via a cumulative sum: (C, F - sub + 1).
    cs = np.concatenate([np.zeros((c, 1)), np.cumsum(power, axis=1, dtype=np.float64)], axis=1)
    run = (cs[:, sub:] - cs[:, :-sub]) / sub
    # Sub-chunk j of window k starts at frame k + j * sub: gather (C, K, n_sub).
    idx = np.arange(n_win)[:, None] + sub * np.arange(n_sub)[None, :]
    rms = np.sqrt(np.maximum(run[:, idx], 0.0))
    return np.flatnonzero(_keep(rms, floor)).astype(np.int32)


def _keep(rms: np.ndarray, floor: float) -> np.ndarray:
    """The official decision on sub-chunk RMS (C, K, n_sub) -> bool (K,)."""
    rms = np.where(rms == 0, 1e-5, rms)
    thr = np.maximum(np.quantile(rms, QUANTILE, axis=-1, keepdims=True), floor)
    frac = np.mean(rms > thr, axis=-1)  # (C, K)
    return np.all(frac > 0.5, axis=0)


def is_active(x: np.ndarray, floor: float = DEFAULT_FLOOR, n_sub: int = N_SUB) -> bool:
    """The official SAD decision for one window of audio (C, N), computed directly from the samples."""
    n = x.shape[1] // n_sub
    sub = x[:, : n * n_sub].astype(np.float64).reshape(x.shape[0], n_sub, n)
    rms = np.sqrt(np.mean(sub * sub, axis=2))[:, None, :]  # (C, 1, n_sub)
    return bool(_keep(rms, floor)[0])
