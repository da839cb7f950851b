"""Training validation: evaluate's Separator and score_track give the numbers of a direct chunked
separation scored with the metrics, per stem and aggregated the paper's way; the tracks are shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2.apply import apply_model
from bsmamba2.data.musdb import TrackInfo, find_tracks, load_track
from bsmamba2.device import DistEnv
from bsmamba2.evaluate.metrics import csdr, usdr
from bsmamba2.model import build_model
from bsmamba2.train.config import TrainConfig, load_config
from bsmamba2.train.validate import validate

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 valid tracks of 1.2 s, stereo, with four different stems."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * SR)) / SR
    for k in range(3):
        stems = {
            "vocals": 0.3 * np.sin(2 * np.pi * (220 + 40 * k) * t) * (np.sin(2 * np.pi * 2 * t + k) > 0),
            "drums": 0.2 * rng.standard_normal(t.size) * (np.mod(t, 0.25) < 0.03),
            "bass": 0.3 * np.sin(2 * np.pi * 55 * t),
            "other": 0.05 * rng.standard_normal(t.size),
        }
        for name, x in stems.items():
            path = root / "valid" / f"song{k}" / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.stack([x, 0.7 * x], axis=1).astype(np.float32), SR, subtype="FLOAT")
    return root


def direct_scores(model: torch.nn.Module, tracks: list[TrackInfo], cfg: TrainConfig) -> dict[str, float]:
    """apply_model on the model's channel layout, uSDR mean and cSDR median over tracks, mean over stems."""
    mc, vc = cfg.model, cfg.valid
    per_stem: dict[str, list[tuple[float, float]]] = {s: [] for s in mc.stems}
    for info in tracks:
        mix, refs = load_track(info, stems=mc.stems)
        if mc.audio_channels == 1:
            mix, refs = mix.mean(0, keepdims=True), {s: r.mean(0, keepdims=True) for s, r in refs.items()}
        with torch.no_grad():
            est = apply_model(
                model.eval(),
                torch.from_numpy(mix),
                segment=round(vc.segment_seconds * mc.sample_rate),
                overlap=vc.overlap,
                batch_size=vc.batch_size,
            ).numpy()
        for k, s in enumerate(mc.stems):
            per_stem[s].append((usdr(refs[s], est[k]), csdr(refs[s], est[k])))
    out = {}
    for s, rows in per_stem.items():
        out[f"usdr/{s}"] = float(np.mean([u for u, _ in rows]))
        out[f"csdr/{s}"] = float(np.nanmedian([c for _, c in rows]))
    out["usdr"] = float(np.mean([out[f"usdr/{s}"] for s in mc.stems]))
    out["csdr"] = float(np.mean([out[f"csdr/{s}"] for s in mc.stems]))
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.audio_channels=1"],
        ["model.stems=[vocals,drums,bass,other]", "valid.overlap=0.25", "valid.batch_size=3"],
    ],
)
def test_validation_scores_equal_a_direct_separation(corpus: Path, overrides: list[str]) -> None:
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml", [f"data.root={corpus}", "valid.segment_seconds=0.4", *overrides]
    )
    tracks = find_tracks(corpus, "valid", stems=cfg.model.stems)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    result = validate(model, tracks, cfg, DistEnv(), torch.device("cpu"), None)
    assert model.training  # the mode is restored
    expected = direct_scores(model, tracks, cfg)
    assert result.metrics.keys() == expected.keys()
    for k, v in expected.items():
        assert result.metrics[k] == v, k
    name, mix, est, ref = result.examples[0]  # tiny.yaml: one audio example, of the first stem
    assert len(result.examples) == 1 and name == "song0"
    assert mix.shape == est.shape == ref.shape == (cfg.model.audio_channels, int(1.2 * SR))


def test_each_process_separates_its_share(corpus: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.root={corpus}", "valid.segment_seconds=0.4"])
    tracks = find_tracks(corpus, "valid", stems=cfg.model.stems)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    # rank 1 of 2 (no process group here, so nothing is gathered): tracks 1 only, and no audio examples
    second = validate(model, tracks, cfg, DistEnv(rank=1, world_size=2), torch.device("cpu"), None)
    assert second.metrics == direct_scores(model, tracks[1:2], cfg) and not second.examples
