"""Dataset layouts: the registry, the musdb default (MUSDB18HQ rules) and the plain folders layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bsmamba2 import audio
from bsmamba2.data import layouts, musdb
from bsmamba2.data.musdb import STEMS, TrackInfo
from bsmamba2.data.sampler import MixDataset, SamplerConfig, iter_tracks
from bsmamba2.errors import UserError

SR = 44100


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write_track(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for s in STEMS:
        x = (0.1 * rng.standard_normal((2, SR // 2))).astype(np.float32)
        audio.write(folder / f"{s}.wav", x, SR, subtype="FLOAT")


def names(tracks: list[TrackInfo]) -> list[str]:
    return [t.name for t in tracks]


def test_musdb_is_the_default_and_splits_off_the_official_validation_tracks(tmp_path: Path) -> None:
    write_track(tmp_path / "train" / "Leaf - Summerghost")
    write_track(tmp_path / "train" / "Some Band - Song", seed=1)
    assert names(layouts.find_tracks(tmp_path, "valid")) == ["Leaf - Summerghost"]
    assert names(layouts.find_tracks(tmp_path, "train", layout="musdb")) == ["Some Band - Song"]
    assert layouts.find_tracks(tmp_path, "train") == musdb.find_tracks(tmp_path, "train")


def test_folders_layout_reads_the_root_as_the_tracks_of_every_subset(tmp_path: Path) -> None:
    # a song called "test": the musdb layout takes it for the test subset, the folders layout for a track
    write_track(tmp_path / "test")
    write_track(tmp_path / "Leaf - Summerghost", seed=1)
    with pytest.raises(UserError, match="no train/ folder"):
        layouts.find_tracks(tmp_path, "train")
    for subset in ("train", "valid", "test"):
        assert names(layouts.find_tracks(tmp_path, subset, layout="folders")) == [
            "Leaf - Summerghost",
            "test",
        ]
    assert names(layouts.find_tracks(tmp_path, "train", stems=["vocals"], layout="folders")) == [
        "Leaf - Summerghost",
        "test",
    ]
    with pytest.raises(UserError, match="does not exist"):
        layouts.find_tracks(tmp_path / "missing", layout="folders")
    with pytest.raises(UserError, match="unknown subset"):
        layouts.find_tracks(tmp_path, "dev", layout="folders")


def test_unknown_layout_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown dataset layout 'zip' \\(choose from musdb, folders\\)"):
        layouts.find_tracks(tmp_path, layout="zip")


def test_the_sampler_and_full_track_iteration_go_through_the_layout(tmp_path: Path) -> None:
    write_track(tmp_path / "test")
    write_track(tmp_path / "b", seed=1)
    cfg = SamplerConfig(segment_seconds=0.1, activity_threshold=None, items_per_epoch=2)
    ds = MixDataset(tmp_path, "train", cfg, layout="folders")
    assert names(ds.tracks) == ["b", "test"]
    assert [info.name for info, _, _ in iter_tracks(tmp_path, "valid", layout="folders")] == ["b", "test"]
    with pytest.raises(UserError, match="no train/ folder"):
        MixDataset(tmp_path, "train", cfg)
