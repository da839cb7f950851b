"""The paper's analyses and reference points.

- **Vocal-region duration** (paper Table III): uSDR measured only inside regions where the reference vocals
  are continuously active, bucketed by the region's duration (1-2 s, 2-4 s, 4-8 s). The paper does not say
  how regions were found; here they come from the synthetic corpus's ``meta.json`` phrases when present
  (exact by construction), else from ``vocal_regions``, an energy detector on the reference vocals.
- **Input length** (paper Table IV) is not a separate computation: it is ``evaluate`` with ``--segment``
  set to 1, 2, 4, 8, 12, 16 s and no overlap (the official ``evaluate.py --duration d``).
- **Floor and ceiling**: ``mixture_baseline`` (the mixture as every estimate) and ``oracle_irm`` (ideal
  ratio masks computed from the true stems) bracket what any mask-based separator can score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.evaluate.metrics import nanmean, usdr

# Table III's buckets, in seconds: [lo, hi)
DURATION_BUCKETS: tuple[tuple[float, float], ...] = ((1.0, 2.0), (2.0, 4.0), (4.0, 8.0))


def bucket_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}s"


def bucket_of(duration: float, buckets: Sequence[tuple[float, float]] = DURATION_BUCKETS) -> str | None:
    """Label of the bucket holding ``duration`` seconds (lo <= d < hi), or None."""
    for lo, hi in buckets:
        if lo <= duration < hi:
            return bucket_label(lo, hi)
    return None


# ---- vocal regions -----------------------------------------------------------------------------------


def vocal_regions(
    vocals: np.ndarray,
    sample_rate: int = MODEL_SAMPLE_RATE,
    *,
    frame: int = 2048,
    hop: int = 441,
    rel_db: float = -40.0,
    abs_db: float = -60.0,
    min_gap: float = 0.2,
    min_length: float = 0.5,
) -> list[tuple[int, int]]:
    """Regions [start, end) in samples where ``vocals`` (C, N) is continuously active.

    A frame (``frame`` samples every ``hop``, 10 ms at 44.1 kHz) is active when its RMS over channels is above
    both ``abs_db`` dBFS and ``rel_db`` dB below the loudest frame of the track (so quiet mixes are judged on
    their own scale). Pauses shorter than ``min_gap`` seconds (breaths, stops between syllables) do not break a
    region; regions shorter than ``min_length`` seconds are dropped.
    """
    x = np.asarray(vocals, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    n = x.shape[-1]
    if n == 0:
        return []
    power = (x**2).mean(axis=0)  # (N,)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.arange(0, n, hop)
    ends = np.minimum(starts + frame, n)
    rms_db = 10 * np.log10((csum[ends] - csum[starts]) / (ends - starts) + 1e-20)  # (T,)
    thresh = max(abs_db, rms_db.max() + rel_db)
    active = rms_db > thresh
    regions: list[list[int]] = []
    for t in np.flatnonzero(active):
        s, e = int(starts[t]), int(min(starts[t] + hop, n))  # each frame owns its hop
        if regions and s - regions[-1][1] < min_gap * sample_rate:
            regions[-1][1] = e
        else:
            regions.append([s, e])
    return [(s, e) for s, e in regions if e - s >= min_length * sample_rate]


def regions_from_meta(meta: Mapping[str, Any], sample_rate: int = MODEL_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Regions [start, end) in samples at ``sample_rate`` from a synthetic track's ``meta.json`` phrases
    (``start_sample``/``end_sample`` when present at that rate's scale, else ``start``/``end`` seconds)."""
    meta_rate = int(meta.get("sample_rate", sample_rate))
    out: list[tuple[int, int]] = []
    for ph in meta.get("phrases", []):
        if "start_sample" in ph and "end_sample" in ph:
            s = round(int(ph["start_sample"]) * sample_rate / meta_rate)
            e = round(int(ph["end_sample"]) * sample_rate / meta_rate)
        else:
            s, e = round(float(ph["start"]) * sample_rate), round(float(ph["end"]) * sample_rate)
        if e > s:
            out.append((s, e))
    return sorted(out)


@dataclass(frozen=True)
class RegionScore:
    """uSDR of one vocal region."""

    start: int
    end: int
    duration: float
    bucket: str | None
    usdr: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "bucket": self.bucket,
            "usdr": self.usdr,
        }


def region_scores(
    reference: np.ndarray,
    estimate: np.ndarray,
    regions: Sequence[tuple[int, int]],
    sample_rate: int = MODEL_SAMPLE_RATE,
    buckets: Sequence[tuple[float, float]] = DURATION_BUCKETS,
) -> list[RegionScore]:
    """uSDR inside each region; reference, estimate (C, N). Regions are clipped to the signal."""
    n = reference.shape[-1]
    out = []
    for s, e in regions:
        s, e = max(0, s), min(n, e)
        if e <= s:
            continue
        d = (e - s) / sample_rate
        out.append(RegionScore(s, e, d, bucket_of(d, buckets), usdr(reference[..., s:e], estimate[..., s:e])))
    return out


def duration_table(
    scores: Sequence[RegionScore], buckets: Sequence[tuple[float, float]] = DURATION_BUCKETS
) -> dict[str, dict[str, float]]:
    """{bucket: {"usdr_mean", "regions"}} pooling the regions of all tracks (regions outside every bucket
    are left out)."""
    table: dict[str, dict[str, float]] = {}
    for lo, hi in buckets:
        label = bucket_label(lo, hi)
        vals = [r.usdr for r in scores if r.bucket == label]
        table[label] = {"usdr_mean": nanmean(vals), "regions": float(len(vals))}
    return table


# ---- floor and ceiling -------------------------------------------------------------------------------


def mixture_baseline(mix: np.ndarray, stems: Sequence[str]) -> dict[str, np.ndarray]:
    """The mixture (C, N) as the estimate of every stem: the score of doing nothing."""
    return {s: mix.copy() for s in stems}


def oracle_irm(
    mix: np.ndarray,
    stems: Mapping[str, np.ndarray],
    *,
    n_fft: int = 2048,
    hop: int = 441,
    power: float = 1.0,
) -> dict[str, np.ndarray]:
    """Oracle ideal ratio masks: estimates (C, N) for each stem in ``stems`` (references (C, N)).

    mask_j = |S_j|^power / Σ_k |S_k|^power on a ``torch.stft`` (Hann, n_fft 2048, hop 441: the model's own
    grid), applied to the mixture's STFT and inverted. ``power`` 1 is the magnitude-ratio IRM (SiSEC's "IRM1"),
    2 the Wiener-like power ratio ("IRM2"). If the given stems do not add up to the mixture, the remainder
    ``mix - Σ stems`` is one more source in the denominator (so a vocals-only reference works).
    """
    names = list(stems)
    sources = [np.asarray(stems[s], np.float32) for s in names]
    rest = mix - np.sum(sources, axis=0)
    if np.abs(rest).max(initial=0.0) > 1e-4 * max(1e-8, float(np.abs(mix).max(initial=0.0))):
        sources.append(rest.astype(np.float32))
    n = mix.shape[-1]
    window = torch.hann_window(n_fft)

    # reflect padding (the model's) needs more than n_fft // 2 samples; tiny signals get zero padding
    pad_mode = "reflect" if n > n_fft // 2 else "constant"

    def stft(x: np.ndarray) -> torch.Tensor:  # (C, N) -> (C, F, T) complex
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return torch.stft(t, n_fft, hop, window=window, pad_mode=pad_mode, return_complex=True)

    mag = torch.stack([stft(s).abs().pow(power) for s in sources])  # (K, C, F, T)
    den = mag.sum(0).clamp_min(1e-12)
    mix_spec = stft(mix)
    out = {}
    for i, name in enumerate(names):
        est = torch.istft(mix_spec * (mag[i] / den), n_fft, hop, window=window, length=n)  # (C, N)
        out[name] = est.numpy()
    return out
