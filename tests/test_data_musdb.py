"""Dataset scanning: MUSDB18HQ layout, validation split, generic stems, malformed folders, caching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bsmamba2 import audio
from bsmamba2.data import musdb
from bsmamba2.data.musdb import STEMS, VALIDATION_TRACKS, find_tracks, load_meta, load_track, scan_tracks
from bsmamba2.errors import UserError

SR = 44100


def write_track(folder: Path, stems=STEMS, frames: int = 4410, sr: int = SR, channels: int = 2, seed: int = 0,
                mixture: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    rng = np.random.default_rng(seed)
    out = {}
    for s in stems:
        x = (0.1 * rng.standard_normal((channels, frames))).astype(np.float32)
        audio.write(folder / f"{s}.wav", x, sr, subtype="FLOAT")
        out[s] = x
    if mixture:
        audio.write(folder / "mixture.wav", sum(out.values()), sr, subtype="FLOAT")
    return out


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch, tmp_path):
    # keep the header cache inside tmp_path and the in-process cache empty between tests
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_musdb_layout_and_official_validation_split(tmp_path: Path) -> None:
    names = ["Actions - One Minute Smile", "Leaf - Summerghost", "Some Band - Song", "Other - Tune"]
    for i, n in enumerate(names):
        write_track(tmp_path / "train" / n, seed=i)
    write_track(tmp_path / "test" / "Test - One", seed=9)
    train = find_tracks(tmp_path, "train")
    valid = find_tracks(tmp_path, "valid")
    test = find_tracks(tmp_path, "test")
    assert [t.name for t in train] == ["Other - Tune", "Some Band - Song"]
    assert [t.name for t in valid] == ["Actions - One Minute Smile", "Leaf - Summerghost"]
    assert all(t.name in VALIDATION_TRACKS for t in valid)
    assert [t.name for t in test] == ["Test - One"]
    assert set(train[0].stems) == set(STEMS) and train[0].frames == 4410 and train[0].sample_rate == SR


def test_valid_folder_takes_precedence(tmp_path: Path) -> None:
    write_track(tmp_path / "train" / "Actions - One Minute Smile")
    write_track(tmp_path / "train" / "A")
    write_track(tmp_path / "train" / "B")
    write_track(tmp_path / "valid" / "B")
    assert [t.name for t in find_tracks(tmp_path, "valid")] == ["B"]
    # official names stay in train when a valid/ folder exists; tracks duplicated in valid/ leave train
    assert [t.name for t in find_tracks(tmp_path, "train")] == ["A", "Actions - One Minute Smile"]


def test_generic_stems_without_subsets(tmp_path: Path) -> None:
    write_track(tmp_path / "song1", stems=("vocals", "piano", "guitar"))
    write_track(tmp_path / "song2", stems=("vocals", "bass"))
    tracks = find_tracks(tmp_path, "train")
    assert [sorted(t.stems) for t in tracks] == [["guitar", "piano", "vocals"], ["bass", "vocals"]]
    # required stems filter tracks
    assert [t.name for t in scan_tracks(tmp_path, "train", stems=["piano"]).tracks] == ["song1"]


def test_load_track_mono_resampled_and_mixture(tmp_path: Path, caplog) -> None:
    refs = write_track(tmp_path / "train" / "mono", channels=1)
    write_track(tmp_path / "train" / "rate48", sr=48000, frames=4800, mixture=True)
    with caplog.at_level(logging.WARNING):
        tracks = {t.name: t for t in find_tracks(tmp_path, "train")}
    assert "resampled" in caplog.text and "48000" in caplog.text
    mix, stems = load_track(tracks["mono"])
    assert mix.shape == (2, 4410) and stems["vocals"].shape == (2, 4410)
    np.testing.assert_array_equal(stems["vocals"][0], stems["vocals"][1])  # mono duplicated
    np.testing.assert_allclose(mix, np.repeat(sum(refs.values()), 2, axis=0), atol=1e-6)
    mix48, stems48 = load_track(tracks["rate48"], stems=["vocals"])
    assert mix48.shape == (2, 4410) and list(stems48) == ["vocals"]
    assert musdb.read_stem(tracks["rate48"], "drums", 1000, 2000).shape == (2, 2000)
    assert load_meta(tracks["mono"]) is None


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "missing stem bass"),
        ("length", "different lengths"),
        ("rate", "different sample rates"),
        ("unreadable", "cannot read audio"),
        ("noaudio", "no audio files"),
        ("empty_file", "empty"),
        ("channels", "channels"),
    ],
)
def test_malformed_track_is_skipped_with_named_warning(
    tmp_path: Path, caplog, case: str, reason: str
) -> None:
    write_track(tmp_path / "train" / "good")
    bad = tmp_path / "train" / "bad"
    bad.mkdir(parents=True)
    if case == "missing":
        write_track(bad, stems=("vocals", "drums", "other"))
    elif case == "length":
        write_track(bad)
        audio.write(bad / "bass.wav", np.zeros((2, 100), np.float32), SR)
    elif case == "rate":
        write_track(bad)
        audio.write(bad / "bass.wav", np.zeros((2, 4410), np.float32), 22050)
    elif case == "unreadable":
        write_track(bad)
        (bad / "drums.wav").write_bytes(b"this is not a wav file at all" * 10)
    elif case == "noaudio":
        (bad / "notes.txt").write_text("hello")
    elif case == "empty_file":
        write_track(bad)
        audio.write(bad / "other.wav", np.zeros((2, 0), np.float32), SR)
    elif case == "channels":
        write_track(bad)
        audio.write(bad / "other.wav", np.zeros((3, 4410), np.float32), SR)
    with caplog.at_level(logging.WARNING):
        res = scan_tracks(tmp_path, "train")
    assert [t.name for t in res.tracks] == ["good"]
    assert res.skipped[0][0] == "bad" and reason in res.skipped[0][1]
    assert "'bad'" in caplog.text and reason in caplog.text


def test_empty_and_missing_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        find_tracks(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="no track folders"):
        find_tracks(tmp_path, "train")
    with pytest.raises(UserError, match="no test/ folder"):
        find_tracks(tmp_path, "test")
    (tmp_path / "train" / "x").mkdir()
    with pytest.raises(UserError, match="no usable tracks"):
        find_tracks(tmp_path, "train")
    with pytest.raises(UserError, match="unknown subset"):
        find_tracks(tmp_path, "dev")


def test_headers_are_cached_on_disk(tmp_path: Path, monkeypatch) -> None:
    write_track(tmp_path / "train" / "a")
    find_tracks(tmp_path, "train")
    assert (tmp_path / ".bsmamba2_cache" / "headers.json").is_file()
    monkeypatch.setattr(musdb, "_HEADERS", {})

    def boom(path):
        raise AssertionError("header read again")

    monkeypatch.setattr(musdb.audio, "info", boom)
    assert [t.name for t in find_tracks(tmp_path, "train")] == ["a"]
