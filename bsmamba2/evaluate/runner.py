"""Evaluation as a library: score a model (through ``Separator``) or a baseline on a folder of tracks.

A :class:`Candidate` is what gets scored; :func:`evaluate` separates every track once per chunk length,
scores it (:mod:`bsmamba2.evaluate.scoring`) and writes the per-track JSON (and, if asked, the estimates)
under ``OUT/segment_<S>s/`` (``OUT/baseline/`` for a baseline), returning the rows for the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.api import Separator
from bsmamba2.audio import MODEL_SAMPLE_RATE
from bsmamba2.data import musdb
from bsmamba2.errors import AudioError, UserError
from bsmamba2.evaluate import studies
from bsmamba2.evaluate.report import write_json
from bsmamba2.evaluate.scoring import track_report
from bsmamba2.stems import add_residual, output_names, residual_name

log = logging.getLogger(__name__)

BASELINES = ("mixture", "oracle-irm")


@dataclass(frozen=True)
class Candidate:
    """What is scored: a model behind a ``Separator``, or a baseline ("mixture" or "oracle-irm").

    ``stems``: the model's stems (for a baseline, the requested ones less the residual); the outputs add
    the residual of a single-stem model ("instrumental" = mixture - vocals).
    """

    name: str
    stems: tuple[str, ...]
    sample_rate: int
    separator: Separator | None = None
    baseline: str | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return output_names(self.stems)

    def check_stems(self, requested: Sequence[str] | None) -> tuple[str, ...]:
        """The stems to score: ``requested`` (checked against the outputs) or all outputs."""
        stems = tuple(requested) if requested else self.outputs
        bad = [s for s in stems if s not in self.outputs]
        if bad:
            raise UserError(f"cannot score {', '.join(bad)}: the model gives {', '.join(self.outputs)}")
        return stems

    def estimates(
        self,
        mix: np.ndarray,
        true_stems: Mapping[str, np.ndarray],
        stems: Sequence[str],
        segment: float,
        progress: bool = True,
    ) -> dict[str, np.ndarray]:
        """{output: (C, N)} estimates of ``mix`` (C, N) at ``self.sample_rate``; ``segment``: chunk seconds;
        ``progress``: a chunk bar while a model runs."""
        if self.separator is not None:
            out = self.separator.with_segment(segment).separate(mix, self.sample_rate, progress=progress)
            return {k: v.numpy() for k, v in out.items()}
        if self.baseline == "mixture":
            est = studies.mixture_baseline(mix, stems)
        else:
            est = studies.oracle_irm(mix, true_stems)
        return add_residual(mix, est, self.stems)


def model_candidate(path: str | Path, *, overlap: float = 0.0, **settings: Any) -> Candidate:
    """A model file behind ``Separator.from_pretrained(path, overlap=..., **settings)`` (device, precision,
    batch_size, backend); the chunk length is set per run."""
    sep = Separator.from_pretrained(path, overlap=overlap, **settings)
    return Candidate(Path(path).stem, sep.model_stems, sep.sample_rate, separator=sep)


def baseline_candidate(baseline: str, requested: Sequence[str] | None) -> Candidate:
    """A reference point for the requested stems (vocals alone also gets instrumental = mix - vocals)."""
    if baseline not in BASELINES:
        raise UserError(f"unknown baseline {baseline!r} (choose from {', '.join(BASELINES)})")
    stems = tuple(s for s in (requested or ("vocals",)) if s != "instrumental") or ("vocals",)
    return Candidate(baseline, stems, MODEL_SAMPLE_RATE, baseline=baseline)


@dataclass
class Results:
    """Per-track rows of every run (keyed by chunk seconds; 0 for a baseline) and the tracks that failed."""

    per_run: dict[float, list[dict[str, Any]]]
    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # failed track -> why


def run_folder(out_root: Path, candidate: Candidate, segment: float) -> Path:
    return out_root / (f"segment_{segment:g}s" if candidate.separator is not None else "baseline")


def evaluate(
    candidate: Candidate,
    tracks: Sequence[musdb.TrackInfo],
    stems: Sequence[str],
    segments: Sequence[float],
    out_root: Path,
    *,
    save_estimates: bool = False,
    progress: bool = True,
) -> Results:
    """Score every track once per chunk length in ``segments`` (seconds; one run for a baseline).

    Writes ``OUT/<run>/tracks/<track>.json`` per track and run (and ``estimates/<track>/<stem>.wav`` with
    ``save_estimates``). A track that cannot be read, or whose audio holds NaN or infinite samples, is
    logged and listed in ``Results.failed`` (with the reason in ``Results.errors``), and scored nowhere.
    ``progress``: track and chunk bars on stderr.
    """
    runs = [float(s) for s in segments] if candidate.separator is not None else [0.0]
    results = Results({s: [] for s in runs})
    for info in tqdm(tracks, unit="track", disable=not progress or len(tracks) < 2):
        try:
            mix, refs, true_stems, regions, phrases = _load(candidate, info)
        except UserError as e:
            log.error("%s: %s", info.name, e)
            results.failed.append(info.name)
            results.errors[info.name] = str(e)
            continue
        for seg in runs:
            estimates = candidate.estimates(mix, true_stems, stems, seg, progress)
            estimates = {k: v for k, v in estimates.items() if k in stems}
            row = {
                "track": info.name,
                "duration": mix.shape[-1] / candidate.sample_rate,
                "regions_from": "meta.json" if regions is not None else "energy detector",
                **track_report(refs, estimates, candidate.sample_rate, regions, mixture=mix, phrases=phrases),
            }
            results.per_run[seg].append(row)
            folder = run_folder(out_root, candidate, seg)
            write_json(folder / "tracks" / f"{info.name}.json", row)
            if save_estimates:
                for stem, est in estimates.items():
                    path = folder / "estimates" / info.name / f"{stem}.wav"
                    audio.write(path, est, candidate.sample_rate, subtype="float")
    return results


def _load(
    candidate: Candidate, info: musdb.TrackInfo
) -> tuple[
    np.ndarray,
    dict[str, np.ndarray],
    dict[str, np.ndarray],
    list[tuple[int, int]] | None,
    list[tuple[int, int]] | None,
]:
    """(mixture, references with the residual, the files' own stems, vocal regions for Table III, the
    meta.json phrases). Regions and phrases are [start, end) samples; regions are None without phrases (the
    energy detector finds them), phrases None without a meta.json that lists them ([] for an instrumental
    song: the leakage then takes the whole track as silent, not a threshold's guess).

    The oracle needs every stem of the track; everything else only the candidate's stems.
    """
    rate = candidate.sample_rate
    wanted = None if candidate.baseline == "oracle-irm" else candidate.stems
    mix, refs = musdb.load_track(info, stems=wanted, sample_rate=rate)
    for name, x in (("mixture", mix), *refs.items()):
        _check_finite(info, name, x)
    meta = musdb.load_meta(info)
    true_stems = dict(refs)  # before adding the derived residual
    if residual_name(candidate.stems) is not None and candidate.stems[0] in refs:
        refs = add_residual(mix, refs, candidate.stems)  # e.g. instrumental = mixture - vocals
    phrases = studies.regions_from_meta(meta, rate) if meta and "phrases" in meta else None
    regions = phrases if meta and meta.get("phrases") else None
    return mix, refs, true_stems, regions, phrases


def _check_finite(info: musdb.TrackInfo, stem: str, x: np.ndarray) -> None:
    """AudioError naming the file when ``x`` (C, N) holds NaN or inf: a score against it means nothing."""
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        path = info.mixture if stem == "mixture" and info.mixture is not None else info.stems.get(stem)
        source = path.name if path is not None else f"{stem} (the sum of the stems)"
        raise AudioError(f"{source} has {bad} NaN or infinite sample(s); the track is not scored")
