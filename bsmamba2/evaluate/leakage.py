"""Vocal leakage where there is no voice: how loud the estimated vocals are where the reference has none.

uSDR and cSDR cannot see this failure. museval (and ``metrics.sdr_frames``) skips every frame whose reference
is silent, and a sparse track's uSDR is dominated by its phrases; a model that "hears a voice" in a lead
instrument between phrases, or throughout an instrumental song, loses almost nothing on either. Issue 14's
target reads: on songs without vocals, the estimated vocals are at least 20 dB below the mixture's energy.

- **Silent samples** ("no voice"). With a ``meta.json`` (the synthetic corpus): every sample outside the
  listed phrases at which the reference vocals are exactly zero in every channel (``bsmamba2 synth`` writes
  exact zeros there, so that is every sample outside the phrases; an instrumental song lists no phrase and is
  silent throughout). Without one (real stems): a 441-sample hop (10 ms at 44.1 kHz) is silent when the
  reference vocals' mean power over channels, in the 2048-sample frame centred on it, is below
  ``SILENCE_DB`` (-60 dBFS); silent runs shorter than ``MIN_SILENCE`` (0.2 s, the pause the vocal-region
  detector bridges) are left out. ``reference_db`` then says how much true voice the threshold let in.
- **Leakage** (dB, lower is better): ``10 log10(Σ v̂² / Σ x²)`` over the silent samples and both channels,
  v̂ the estimated vocals and x the mixture; an estimate equal to the mixture gives 0 dB, a zero estimate
  the floor ``LEAK_FLOOR_DB`` (-120 dB) instead of -inf. NaN when a track has no silent sample (its
  ``silent_seconds`` is 0), NaN too where the mixture is exactly zero and so is the estimate (+inf if the
  estimate is not).
- **Windows**: each silent run is tiled from its start into 1 s windows (a remainder shorter than a window
  is left out); a window "hears a voice" when its own leakage is above ``TARGET_DB`` (-20 dB). The share of
  such windows says how often the model hallucinates, where the track's number says how loudly.
- **Aggregates** over tracks: energy-weighted (the pooled ratio ``Σ_tracks Σ v̂² / Σ_tracks Σ x²``: every
  silent second counts the same), the mean of the per-track dB (issue 14's "on average") and the worst
  track; separately over the **instrumental** tracks, those silent throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from einops import reduce

from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.evaluate.metrics import nanmean

SILENCE_DB = (
    -60.0
)  # dBFS: a reference-vocal frame below this mean power is silent (folders without meta.json)
SILENCE_FRAME = 2048  # samples of the power frame centred on each hop
SILENCE_HOP = 441  # 10 ms at 44.1 kHz, the hop of the vocal-region detector
MIN_SILENCE = 0.2  # seconds: shorter quiet runs are pauses inside a phrase
LEAK_FLOOR_DB = -120.0  # a zero estimate, instead of -inf
TARGET_DB = -20.0  # issue 14: estimated vocals at least 20 dB below the mixture
LEAK_WINDOW = 1.0  # seconds per window of the "hears a voice" share


def _channels(x: np.ndarray) -> np.ndarray:
    """(C, N) float64 from (C, N) or (N,)."""
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 1 else x


def leak_db(estimate_energy: float, mixture_energy: float) -> float:
    """``10 log10(estimate_energy / mixture_energy)`` floored at ``LEAK_FLOOR_DB``; a silent mixture gives NaN
    (a silent estimate too) or +inf."""
    if mixture_energy <= 0.0:
        return math.nan if estimate_energy <= 0.0 else math.inf
    ratio = estimate_energy / mixture_energy
    return LEAK_FLOOR_DB if ratio <= 10 ** (LEAK_FLOOR_DB / 10) else 10.0 * math.log10(ratio)


def silent_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) sample spans where the (N,) boolean ``silent`` is True, in order."""
    edges = np.diff(np.concatenate([[0], np.asarray(silent, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def silence_from_phrases(reference: np.ndarray, phrases: Sequence[tuple[int, int]]) -> np.ndarray:
    """(N,) True where ``reference`` (C, N) is exactly zero in every channel and outside every phrase
    [start, end) (samples; e.g. ``studies.regions_from_meta``)."""
    x = _channels(reference)
    silent = ~np.any(x != 0.0, axis=0)  # (N,)
    for s, e in phrases:
        silent[max(0, s) : max(0, e)] = False
    return silent


def silence_from_threshold(
    reference: np.ndarray,
    sample_rate: int = MODEL_SAMPLE_RATE,
    *,
    threshold_db: float = SILENCE_DB,
    frame: int = SILENCE_FRAME,
    hop: int = SILENCE_HOP,
    min_length: float = MIN_SILENCE,
) -> np.ndarray:
    """(N,) True where ``reference`` (C, N) is quiet: hops whose centred ``frame`` has a mean power (over
    channels and samples) below ``threshold_db`` dBFS, in runs of at least ``min_length`` seconds."""
    x = _channels(reference)
    n = x.shape[-1]
    if n == 0:
        return np.zeros(0, dtype=bool)
    power = (x**2).mean(axis=0)  # (N,)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    centres = np.arange(0, n, hop) + hop // 2  # (T,)
    lo = np.clip(centres - frame // 2, 0, n)
    hi = np.clip(centres + frame // 2, 0, n)
    quiet = (csum[hi] - csum[lo]) < 10 ** (threshold_db / 10) * (hi - lo)  # (T,)
    silent = np.repeat(quiet, hop)[:n]  # each hop owns its samples
    for s, e in silent_runs(silent):
        if e - s < min_length * sample_rate:
            silent[s:e] = False
    return silent


def silence_mask(
    reference: np.ndarray, phrases: Sequence[tuple[int, int]] | None, sample_rate: int = MODEL_SAMPLE_RATE
) -> np.ndarray:
    """The silent samples (N,) of reference vocals (C, N): from the meta.json ``phrases`` when the track has
    them ([] for an instrumental song), else from the threshold detector (see the module docstring)."""
    if phrases is not None:
        return silence_from_phrases(reference, phrases)
    return silence_from_threshold(reference, sample_rate)


@dataclass(frozen=True)
class Leakage:
    """Vocal leakage of one track: energies (Σ over channels and silent samples) and window counts."""

    silent_samples: int
    track_samples: int
    estimate_energy: float
    mixture_energy: float
    reference_energy: float
    windows: int  # 1 s windows with a defined leakage
    windows_above: int  # of those, leakage above TARGET_DB
    sample_rate: int = MODEL_SAMPLE_RATE
    silence_from: str = "meta.json"

    @property
    def db(self) -> float:
        """Leakage in dB over the silent samples; NaN when there are none."""
        return leak_db(self.estimate_energy, self.mixture_energy) if self.silent_samples else math.nan

    @property
    def reference_db(self) -> float:
        """The reference vocals' own energy there, relative to the mixture's (the floor for a perfect
        estimate; ``LEAK_FLOOR_DB`` for exact zeros)."""
        return leak_db(self.reference_energy, self.mixture_energy) if self.silent_samples else math.nan

    @property
    def instrumental(self) -> bool:
        """True when the reference vocals are silent throughout the track."""
        return 0 < self.track_samples == self.silent_samples

    def to_dict(self) -> dict[str, Any]:
        return {
            "silence_from": self.silence_from,
            "silent_seconds": self.silent_samples / self.sample_rate,
            "track_seconds": self.track_samples / self.sample_rate,
            "instrumental": self.instrumental,
            "leakage_db": self.db,
            "reference_db": self.reference_db,
            "estimate_energy": self.estimate_energy,
            "mixture_energy": self.mixture_energy,
            "windows": self.windows,
            "windows_above": self.windows_above,
        }


def vocal_leakage(
    mixture: np.ndarray,
    estimate: np.ndarray,
    reference: np.ndarray,
    silent: np.ndarray,
    sample_rate: int = MODEL_SAMPLE_RATE,
    *,
    window: float = LEAK_WINDOW,
    target_db: float = TARGET_DB,
    silence_from: str = "meta.json",
) -> Leakage:
    """Leakage of the estimated vocals over the ``silent`` samples (N,) of one track.

    mixture, estimate, reference: (C, N) (or (N,)) at ``sample_rate``; ``window`` seconds per window of the
    share above ``target_db``; ``silence_from`` names how ``silent`` was found (recorded as is).
    """
    x, v_hat, v = _channels(mixture), _channels(estimate), _channels(reference)
    if not x.shape == v_hat.shape == v.shape or silent.shape != (x.shape[-1],):
        raise ValueError(
            f"mixture {x.shape}, estimate {v_hat.shape}, reference {v.shape}, mask {silent.shape}"
        )
    w = max(1, round(window * sample_rate))
    windows = above = 0
    for s, e in silent_runs(silent):
        k = (e - s) // w
        if k == 0:
            continue
        # per-window energies, the run's time axis split into k windows of w samples
        est_w = reduce(v_hat[:, s : s + k * w] ** 2, "c (k w) -> k", "sum", w=w)  # (k,)
        mix_w = reduce(x[:, s : s + k * w] ** 2, "c (k w) -> k", "sum", w=w)  # (k,)
        db = np.array([leak_db(a, b) for a, b in zip(est_w, mix_w, strict=True)])
        windows += int(np.count_nonzero(~np.isnan(db)))
        above += int(np.count_nonzero(db > target_db))
    return Leakage(
        silent_samples=int(np.count_nonzero(silent)),
        track_samples=int(x.shape[-1]),
        estimate_energy=float(np.sum(v_hat[:, silent] ** 2)),
        mixture_energy=float(np.sum(x[:, silent] ** 2)),
        reference_energy=float(np.sum(v[:, silent] ** 2)),
        windows=windows,
        windows_above=above,
        sample_rate=sample_rate,
        silence_from=silence_from,
    )


def aggregate(tracks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Leakage over tracks (dicts of ``Leakage.to_dict``): energy-weighted and mean dB over the tracks with
    silent samples (``tracks``; ``tracks_without`` counts the others), the worst track, pooled windows."""
    rows = [t for t in tracks if t["silent_seconds"] > 0]
    per_track = np.array([t["leakage_db"] for t in rows], dtype=np.float64)
    defined = per_track[~np.isnan(per_track)]
    windows = sum(int(t["windows"]) for t in rows)
    above = sum(int(t["windows_above"]) for t in rows)
    return {
        "tracks": len(rows),
        "tracks_without": len(tracks) - len(rows),
        "silent_seconds": float(sum(t["silent_seconds"] for t in rows)),
        "leakage_db": leak_db(sum(t["estimate_energy"] for t in rows), sum(t["mixture_energy"] for t in rows))
        if rows
        else math.nan,
        "leakage_mean_db": nanmean(defined),
        "leakage_max_db": float(defined.max()) if defined.size else math.nan,
        "windows": windows,
        "windows_above": above,
        "windows_above_share": above / windows if windows else math.nan,
    }


def leakage_summary(tracks: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """{"silent": aggregate of every track, "instrumental": of those silent throughout (only if any)}, or None
    when no track has a silent sample (nothing to report)."""
    if not any(t["silent_seconds"] > 0 for t in tracks):
        return None
    out = {"silent": aggregate(tracks)}
    instrumental = [t for t in tracks if t["instrumental"]]
    if instrumental:
        out["instrumental"] = aggregate(instrumental)
    return out
