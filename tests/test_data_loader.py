"""The batch loader: whole batches mixed in place in workers, the same tensors as per-item indexing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bsmamba2 import audio
from bsmamba2.data import musdb
from bsmamba2.data.loader import BatchLoader
from bsmamba2.data.musdb import STEMS
from bsmamba2.data.sampler import MixDataset, SamplerConfig

SR = 44100


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """5 tracks of 3 s whose stems differ in level (left) and carry a sample-index ramp (right)."""
    root = tmp_path / "db"
    frames = 3 * SR
    ramp = np.arange(frames, dtype=np.float64) / 2**22
    for k in range(5):
        for j, s in enumerate(STEMS):
            x = np.stack([np.full(frames, (k + 1) / 10 + j / 100), ramp]).astype(np.float32)
            audio.write(root / "train" / f"track{k}" / f"{s}.wav", x, SR, subtype="FLOAT")
    return root


def plain(**kw) -> SamplerConfig:
    """0.5 s examples, no SAD (the augmentations are set per test)."""
    return SamplerConfig(segment_seconds=0.5, activity_threshold=None, **kw)


def bits(x: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns: equal bits means the same tensor, -0.0 and NaN payloads included."""
    return x.contiguous().view(torch.int32)


@pytest.mark.parametrize("persistent", [False, True])
def test_batch_loader_gives_exactly_the_per_item_tensors(corpus: Path, persistent: bool) -> None:
    # every augmentation on, so items differ in gain, sign, channel order and silent stems
    cfg = plain(
        targets=("vocals", "bass"), gain_range=(0.5, 1.5), p_silent=0.3, p_channel_swap=0.5,
        p_polarity_flip=0.5, items_per_epoch=27,
    )  # fmt: skip
    ds = MixDataset(corpus, cfg=cfg, seed=4)
    order = torch.randperm(27, generator=torch.Generator().manual_seed(0)).tolist()
    loader = BatchLoader(ds, order, 2, num_workers=2, persistent_workers=persistent)
    assert len(loader) == 14
    for epoch in (0, 1):
        if not persistent:  # persistent workers keep the dataset (and epoch) they started with
            ds.set_epoch(epoch)
        items = [ds[i] for i in order]
        # all batches kept to the end: each worker reuses its 3 output buffers several times, which must
        # not change batches already handed out
        got = list(loader)
        assert [m.shape[0] for m, _ in got] == [2] * 13 + [1]  # the last batch is short (drop_last off)
        assert bits(torch.cat([m for m, _ in got])).equal(bits(torch.stack([m for m, _ in items])))
        assert bits(torch.cat([t for _, t in got])).equal(bits(torch.stack([t for _, t in items])))
    # in-process (no workers) and the dataset's batch method: same tensors again
    mix, tgt = next(iter(BatchLoader(ds, order, 5, drop_last=True)))
    assert bits(mix).equal(bits(torch.stack([ds[i][0] for i in order[:5]])))
    assert bits(tgt).equal(bits(ds.batch(order[:5])[1]))
