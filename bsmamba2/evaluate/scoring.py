"""Scores of separated tracks, shared by ``bsmamba2 evaluate`` and training-time validation.

``score_track`` is the paper's per-track pair (uSDR, cSDR with museval's 1 s frames) for every reference
stem; ``track_report`` adds what the evaluation writes per track: the per-frame SDRs, the vocal-region
study (Table III) and the vocal leakage where the reference has no voice. Both are built on ``score_stem``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.evaluate import leakage, metrics, studies


@dataclass(frozen=True)
class StemScore:
    """uSDR and cSDR (dB) of one stem of one track, with the per-frame SDRs the cSDR is the median of."""

    usdr: float
    csdr: float
    frames: np.ndarray  # (frames,) SDR per 1 s frame; NaN = silent, +inf = perfect

    def as_dict(self, frames: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"usdr": self.usdr, "csdr": self.csdr}
        if frames:
            out["csdr_frames"] = self.frames.tolist()
        return out


def score_stem(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE
) -> StemScore:
    """Score one stem: reference, estimate (C, N) at ``sample_rate`` (cSDR frames are 1 s long)."""
    frames = metrics.sdr_frames(reference, estimate, sample_rate, sample_rate)
    return StemScore(metrics.usdr(reference, estimate), metrics.nanmedian(frames), frames)


def score_stems(
    estimates: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray],
    sample_rate: int = MODEL_SAMPLE_RATE,
) -> dict[str, StemScore]:
    """``score_stem`` for every stem of ``references`` (in their order); each needs an estimate."""
    missing = [s for s in references if s not in estimates]
    if missing:
        raise ValueError(f"no estimate for stem(s) {', '.join(missing)}")
    return {s: score_stem(ref, estimates[s], sample_rate) for s, ref in references.items()}


def score_track(
    estimates: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray],
    sample_rate: int = MODEL_SAMPLE_RATE,
) -> dict[str, dict[str, float]]:
    """{stem: {"usdr": dB, "csdr": dB}} for every stem of ``references``.

    estimates, references: {stem: (C, N) float array} at ``sample_rate`` (44.1 kHz for the paper's 1 s cSDR
    frames), e.g. the output of ``Separator.separate`` as NumPy. uSDR as the MDX challenge, cSDR as
    museval (the median of its 1 s frames); aggregate over tracks with ``metrics.aggregate``.
    """
    return {
        s: {"usdr": v.usdr, "csdr": v.csdr}
        for s, v in score_stems(estimates, references, sample_rate).items()
    }


def track_report(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int = MODEL_SAMPLE_RATE,
    regions: Sequence[tuple[int, int]] | None = None,
    *,
    mixture: np.ndarray | None = None,
    phrases: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """What the evaluation records of one track: {"stems": {stem: {usdr, csdr, csdr_frames}}} for every
    estimated stem with a reference, plus "vocal_regions" (Table III) when vocals are scored. ``regions``:
    [start, end) samples of the vocal phrases, else found by the energy detector. Arrays (C, N).

    With the ``mixture`` (C, N), scored vocals also get "vocal_leakage" (:mod:`.leakage`): the silent samples
    come from ``phrases`` (a meta.json's, [] for an instrumental song) or, when None, from the threshold.
    """
    scored = {s: references[s] for s in estimates if s in references}
    stems = score_stems(estimates, scored, sample_rate)
    out: dict[str, Any] = {"stems": {s: v.as_dict(frames=True) for s, v in stems.items()}}
    if "vocals" in estimates and "vocals" in references:
        if regions is None:
            regions = studies.vocal_regions(references["vocals"], sample_rate)
        scores = studies.region_scores(references["vocals"], estimates["vocals"], regions, sample_rate)
        out["vocal_regions"] = [r.to_dict() for r in scores]
        if mixture is not None:
            ref = references["vocals"]
            silent = leakage.silence_mask(ref, phrases, sample_rate)
            source = "meta.json" if phrases is not None else f"below {leakage.SILENCE_DB:g} dBFS"
            leak = leakage.vocal_leakage(
                mixture, estimates["vocals"], ref, silent, sample_rate, silence_from=source
            )
            out["vocal_leakage"] = leak.to_dict()
    return out
