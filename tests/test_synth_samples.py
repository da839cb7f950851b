"""The samples engine of ``bsmamba2 synth`` on tiny generated sources: exact sums, vocal silence outside the
phrases of meta.json, determinism, the corpus layout through the CLI, and one-line errors for bad sources."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from synth_fixtures import write_assets, write_bank, write_drumkit, write_soundfont

from bsmamba2 import cli
from bsmamba2.data import musdb
from bsmamba2.data.musdb import STEMS, find_tracks, load_track
from bsmamba2.data.synth import synthesize_corpus, synthesize_track
from bsmamba2.data.synth.phrasing import BUCKETS
from bsmamba2.data.synth.samples.assets import AssetError, Assets

pytest.importorskip(
    "tinysoundfont"
)  # pip install --no-deps tinysoundfont (its pyaudio dependency is optional)
pytest.importorskip("scipy")

SR = 44100


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def track(assets) -> tuple[dict[str, np.ndarray], dict]:
    return synthesize_track(12.0, "dense", seed=4, engine="samples", assets=assets)


def test_exact_sum_and_levels(track) -> None:
    stems, meta = track
    assert list(stems) == list(STEMS)
    for s, x in stems.items():
        assert x.shape == (2, 12 * SR) and x.dtype == np.float32 and np.isfinite(x).all()
        assert 0 < np.abs(x).max() < 1.0, s
    a = stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"]
    b = stems["other"] + stems["bass"] + stems["drums"] + stems["vocals"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a.astype(np.float64), sum(x.astype(np.float64) for x in stems.values()))
    assert meta["engine"] == "samples" and meta["drum_kit"] == "Tiny Kit" and meta["frames"] == 12 * SR


def test_meta_names_its_vocal_bank(assets, track, tmp_path: Path) -> None:
    _, meta = track
    assert (
        meta["vocal_bank"] == hashlib.sha256((assets / "vocals" / "index.json").read_bytes()).hexdigest()[:16]
    )
    other = tmp_path / "other"
    shutil.copytree(assets, other)
    index = json.loads((other / "vocals" / "index.json").read_text())
    index["items"] = index["items"][:-1]  # one phrase fewer: another bank
    (other / "vocals" / "index.json").write_text(json.dumps(index))
    _, meta2 = synthesize_track(12.0, "dense", seed=4, engine="samples", assets=other)
    assert meta2["vocal_bank"] != meta["vocal_bank"]


def test_vocals_only_inside_phrases(track) -> None:
    stems, meta = track
    v = stems["vocals"]
    assert meta["phrases"]
    inside = np.zeros(v.shape[1], bool)
    prev = 0
    for p in meta["phrases"]:
        a, b = p["start_sample"], p["end_sample"]
        assert a >= prev and a == round(p["start"] * SR) and b == round(p["end"] * SR)
        lo, hi = BUCKETS[p["bucket"]]
        assert lo <= (b - a) / SR <= hi + 1e-6 and p["lines"]
        assert np.sqrt(np.mean(v[:, a:b] ** 2)) > 1e-4  # something is sung in every phrase
        inside[a:b] = True
        prev = b
    assert not v[:, ~inside].any()
    assert np.any(stems["drums"][:, ~inside])  # the band plays on between the phrases


def test_determinism(assets) -> None:
    a, ma = synthesize_track(4.0, "medium", seed=9, engine="samples", assets=assets)
    b, mb = synthesize_track(4.0, "medium", seed=9, engine="samples", assets=assets)
    c, _ = synthesize_track(4.0, "medium", seed=10, engine="samples", assets=assets)
    for s in STEMS:
        np.testing.assert_array_equal(a[s], b[s])
    assert ma == mb
    assert any(not np.array_equal(a[s], c[s]) for s in STEMS)


def test_instrumental_preset_has_no_vocals(assets) -> None:
    stems, meta = synthesize_track(3.0, "instrumental", seed=1, engine="samples", assets=assets)
    assert not stems["vocals"].any() and meta["phrases"] == []
    assert any(stems[s].any() for s in ("drums", "bass", "other"))


def test_corpus_through_the_cli(assets, tmp_path: Path) -> None:
    out = tmp_path / "c"
    rc = cli.main(["synth", str(out), "--engine", "samples", "--assets", str(assets), "--train", "1", "--valid", "0",
                   "--test", "1", "--seconds", "2.5", "--preset", "dense", "-q"])  # fmt: skip
    assert rc == 0
    tracks = find_tracks(out, "test")
    assert len(tracks) == 1 and len(find_tracks(out, "train")) == 1
    mix, refs = load_track(tracks[0])
    np.testing.assert_array_equal(mix, refs["vocals"] + refs["drums"] + refs["bass"] + refs["other"])
    assert sf.info(str(tracks[0].mixture)).subtype == "FLOAT"
    again = synthesize_corpus(tmp_path / "d", 0, 0, 1, seconds=2.5, preset="dense", engine="samples", assets=assets,
                              progress=False)  # fmt: skip
    np.testing.assert_array_equal(sf.read(again / "test" / tracks[0].name / "other.wav")[0], refs["other"].T)


def test_missing_sources_name_the_package(tmp_path: Path, capsys) -> None:
    root = tmp_path / "a"
    root.mkdir()
    with pytest.raises(AssetError, match="no General MIDI SoundFont.*fluidr3mono-gm-soundfont"):
        Assets.locate(root)
    write_soundfont(root / "f.sf2", range(1))
    with pytest.raises(AssetError, match="no Hydrogen drum kit.*hydrogen-drumkits"):
        Assets.locate(root)
    write_drumkit(root / "drumkits" / "k")
    with pytest.raises(AssetError, match="build_corpus_v2"):
        Assets.locate(root)
    assert cli.main(["synth", str(tmp_path / "o"), "--engine", "samples", "--assets", str(root), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vocal bank" in err
    with pytest.raises(AssetError, match="not found"):
        Assets.locate(tmp_path / "nowhere")


def test_bad_soundfont_and_bank_are_one_line_errors(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_drumkit(root / "drumkits" / "k")
    write_bank(root / "vocals")
    (root / "broken.sf2").write_bytes(b"RIFF\x10\x00\x00\x00sfbkjunkjunk")
    with pytest.raises(AssetError, match="not a readable SoundFont.*fluidr3mono-gm-soundfont") as e:
        synthesize_track(2.0, "dense", 0, engine="samples", assets=root)
    assert "\n" not in str(e.value)
    (root / "broken.sf2").unlink()
    write_soundfont(root / "f.sf2")
    (root / "vocals" / "index.json").write_text('{"version": 1, "sample_rate": 24000, "sessions": [}')
    with pytest.raises(AssetError, match="not a usable vocal bank.*build_corpus_v2") as e:
        synthesize_track(2.0, "dense", 0, engine="samples", assets=root)
    assert "\n" not in str(e.value)


def test_workers_do_not_change_the_corpus(assets, tmp_path: Path) -> None:
    kw = dict(n_train=2, n_valid=0, n_test=0, seconds=2.0, preset="dense", seed=5, progress=False)
    one = synthesize_corpus(tmp_path / "one", engine="samples", assets=assets, workers=1, **kw)
    two = synthesize_corpus(tmp_path / "two", engine="samples", assets=assets, workers=2, **kw)
    for name in ("synth-train-0000", "synth-train-0001"):
        a, b = one / "train" / name, two / "train" / name
        assert (a / "meta.json").read_bytes() == (b / "meta.json").read_bytes()
        for f in ("vocals.wav", "bass.wav", "mixture.wav"):
            np.testing.assert_array_equal(sf.read(a / f)[0], sf.read(b / f)[0])
