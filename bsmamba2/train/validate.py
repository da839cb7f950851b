"""Full-track validation during training, with evaluate's code (``Separator`` and ``score_track``).

The valid tracks are separated whole in ``valid.segment_seconds`` chunks (official: 8 s, no overlap;
OFFICIAL_SPEC §7) and scored; uSDR is averaged over tracks, cSDR is their median (the paper's
aggregation), and the headline ``usdr`` / ``csdr`` average those over stems. Tracks are shared among
processes; every process gets the same metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bsmamba2.api import Separator
from bsmamba2.data.musdb import TrackInfo, load_track
from bsmamba2.device import DistEnv
from bsmamba2.evaluate.scoring import score_track
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.step import to_model_channels


@dataclass
class Validation:
    metrics: dict[str, float]  # usdr, csdr (averaged over stems) and usdr/STEM, csdr/STEM
    examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    # (track name, mixture (C, N), estimate of the first stem (C, N), its reference (C, N)); main process only


@torch.no_grad()
def validate(
    model: BandSplitSeparator,
    tracks: list[TrackInfo],
    cfg: TrainConfig,
    env: DistEnv,
    device: torch.device,
    amp: torch.dtype | None,
) -> Validation:
    """Separate and score ``tracks`` (this process takes every ``world_size``-th one); the model's
    train/eval mode is restored afterwards."""
    mc, vc = cfg.model, cfg.valid
    was_training = model.training
    separator = Separator(
        model,
        device=device,
        dtype=amp,
        segment=vc.segment_seconds,
        overlap=vc.overlap,
        batch_size=vc.batch_size,
    )
    rows: list[dict[str, dict[str, float]]] = []
    out = Validation({})
    for i in range(env.rank, len(tracks), env.world_size):
        mix_np, refs_np = load_track(tracks[i], stems=mc.stems, sample_rate=mc.sample_rate)
        # the model's channel layout on both sides, so a mono model is scored against mono references
        mix = to_model_channels(torch.from_numpy(mix_np), mc.audio_channels).numpy()  # (C, N)
        refs = {
            s: to_model_channels(torch.from_numpy(r), mc.audio_channels).numpy() for s, r in refs_np.items()
        }
        estimates = {k: v.numpy() for k, v in separator.separate(mix, mc.sample_rate).items()}
        rows.append(score_track(estimates, refs))
        if env.is_main and len(out.examples) < vc.audio_examples:
            first = mc.stems[0]
            out.examples.append((tracks[i].name, mix, estimates[first], refs[first]))
    model.train(was_training)
    if env.launched:
        gathered: list[Any] = [None] * env.world_size
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    if rows:
        out.metrics = aggregate(rows, mc.stems)
    return out


def aggregate(rows: list[dict[str, dict[str, float]]], stems: tuple[str, ...]) -> dict[str, float]:
    """Per-track scores -> usdr/STEM (mean over tracks), csdr/STEM (median), and their means over stems."""
    metrics: dict[str, float] = {}
    for stem in stems:
        metrics[f"usdr/{stem}"] = float(np.mean([r[stem]["usdr"] for r in rows]))
        metrics[f"csdr/{stem}"] = float(np.nanmedian([r[stem]["csdr"] for r in rows]))
    metrics["usdr"] = float(np.mean([metrics[f"usdr/{s}"] for s in stems]))
    metrics["csdr"] = float(np.mean([metrics[f"csdr/{s}"] for s in stems]))
    return metrics
