"""Synthetic corpus: layout, exact sums, vocal silence outside phrases, buckets, presets, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import cli
from bsmamba2.data import musdb
from bsmamba2.data.musdb import STEMS, find_tracks, load_meta, load_track
from bsmamba2.data.synth import synthesize_corpus, synthesize_track
from bsmamba2.data.synth.phrasing import BUCKETS, plan_phrases
from bsmamba2.errors import UserError

SR = 44100


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def track() -> tuple[dict[str, np.ndarray], dict]:
    return synthesize_track(10.0, "dense", seed=11)


def test_track_shapes_and_exact_sum(track) -> None:
    stems, meta = track
    assert list(stems) == list(STEMS)
    for x in stems.values():
        assert x.shape == (2, 10 * SR) and x.dtype == np.float32 and np.isfinite(x).all()
        assert 0 < np.abs(x).max() < 1.0
    a = stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"]
    b = stems["other"] + stems["bass"] + stems["drums"] + stems["vocals"]
    np.testing.assert_array_equal(a, b)  # quantised stems: the float32 sum is exact in any order
    np.testing.assert_array_equal(a.astype(np.float64), sum(s.astype(np.float64) for s in stems.values()))
    for k in ("preset", "seed", "tempo", "key", "singer", "phrases", "style"):
        assert k in meta
    assert meta["seed"] == 11 and meta["preset"] == "dense" and meta["frames"] == 10 * SR


def test_vocals_silent_exactly_outside_phrases(track) -> None:
    stems, meta = track
    v = stems["vocals"]
    inside = np.zeros(v.shape[1], bool)
    assert meta["phrases"]
    prev_end = 0
    for p in meta["phrases"]:
        a, b = p["start_sample"], p["end_sample"]
        assert a == round(p["start"] * SR) and b == round(p["end"] * SR) and a >= prev_end
        lo, hi = BUCKETS[p["bucket"]]
        assert lo <= (b - a) / SR <= hi + 1e-6
        seg = v[:, a:b]
        assert np.sqrt(np.mean(seg**2)) > 1e-3  # the singer sings inside each phrase
        inside[a:b] = True
        prev_end = b
    assert not v[:, ~inside].any()


def test_determinism_per_seed() -> None:
    a, ma = synthesize_track(3.0, "medium", seed=5)
    b, mb = synthesize_track(3.0, "medium", seed=5)
    c, _ = synthesize_track(3.0, "medium", seed=6)
    for s in STEMS:
        np.testing.assert_array_equal(a[s], b[s])
    assert ma == mb
    assert not np.array_equal(a["drums"], c["drums"])


def test_presets_order_vocal_density() -> None:
    rng = np.random.default_rng(0)
    frac = {}
    for preset in ("sparse", "medium", "dense", "mixed", "instrumental"):
        total = 0.0
        for _ in range(40):
            phrases = plan_phrases(60.0, preset, 0.5, rng)
            for a, b, bucket, _ in phrases:
                lo, hi = BUCKETS[bucket]
                assert lo <= b - a <= hi and 0 < a < b <= 60.0
            assert all(p[1] <= q[0] for p, q in zip(phrases, phrases[1:]))
            total += sum(b - a for a, b, _, _ in phrases)
        frac[preset] = total / (40 * 60.0)
    assert frac["instrumental"] == 0.0
    assert frac["sparse"] < frac["medium"] < frac["dense"]
    assert frac["sparse"] < frac["mixed"] < frac["dense"]


def test_corpus_layout_roundtrip_and_cli(tmp_path: Path) -> None:
    out = synthesize_corpus(
        tmp_path / "c", n_train=2, n_valid=1, n_test=1, seconds=2.5, preset="sparse", seed=3, progress=False
    )
    assert json.loads((out / "corpus.json").read_text())["n_train"] == 2
    tracks = {s: find_tracks(out, s) for s in ("train", "valid", "test")}
    assert [len(tracks[s]) for s in tracks] == [2, 1, 1]
    info = tracks["train"][0]
    assert set(info.stems) == set(STEMS) and info.mixture is not None and info.frames == int(2.5 * SR)
    assert sf.info(str(info.mixture)).subtype == "FLOAT" and sf.info(str(info.mixture)).channels == 2
    mix, refs = load_track(info)
    np.testing.assert_array_equal(mix, refs["vocals"] + refs["drums"] + refs["bass"] + refs["other"])
    meta = load_meta(info)
    assert meta is not None and meta["preset"] == "sparse"
    # same seed, same corpus (track seeds do not depend on the order of generation)
    again = synthesize_corpus(
        tmp_path / "d", n_train=1, n_valid=0, n_test=0, seconds=2.5, preset="sparse", seed=3, progress=False
    )
    a, _ = sf.read(out / "train" / info.name / "drums.wav")
    b, _ = sf.read(again / "train" / info.name / "drums.wav")
    np.testing.assert_array_equal(a, b)
    rc = cli.main(
        [
            "synth",
            str(tmp_path / "e"),
            "--train",
            "1",
            "--valid",
            "0",
            "--test",
            "0",
            "--seconds",
            "1.5",
            "-q",
        ]
    )
    assert rc == 0 and (tmp_path / "e" / "train" / "synth-train-0000" / "meta.json").is_file()


def test_bad_arguments_are_user_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match="preset"):
        synthesize_track(2.0, "loud", seed=0)
    with pytest.raises(UserError, match="not all 0"):
        synthesize_corpus(tmp_path, 0, 0, 0)
    assert cli.main(["synth", str(tmp_path / "x"), "--train", "0", "--valid", "0", "--test", "0"]) == 1
    assert "error" in capsys.readouterr().err


def test_short_tracks_still_get_a_phrase() -> None:
    for preset in ("sparse", "medium", "dense", "mixed"):
        for seed in range(30):
            assert plan_phrases(1.4, preset, 0.5, np.random.default_rng(seed)), (preset, seed)


def test_workers_do_not_change_the_corpus(tmp_path: Path) -> None:
    kw = dict(n_train=2, n_valid=0, n_test=0, seconds=1.5, preset="dense", seed=7, progress=False)
    one = synthesize_corpus(tmp_path / "one", workers=1, **kw)
    two = synthesize_corpus(tmp_path / "two", workers=2, **kw)
    for name in ("synth-train-0000", "synth-train-0001"):
        a, b = one / "train" / name, two / "train" / name
        assert (a / "meta.json").read_bytes() == (b / "meta.json").read_bytes()
        for f in ("vocals.wav", "mixture.wav"):  # compare samples: float WAV headers carry a timestamp
            np.testing.assert_array_equal(sf.read(a / f)[0], sf.read(b / f)[0])


# Two tracks of the oscillator engine, recorded before composer.py was split into theory / score / grooves /
# parts / phrasing: the split must not change the corpus. meta.json (the score: phrases, notes, parts) is pinned
# to the byte; the stems by their L1 and energy to 1e-6. Not to the bit: numpy's SIMD transcendental functions
# differ in the last ulp between CPUs (an AVX2-only host and an AVX-512 one), any real change moves these far more.
PINNED = {
    (7, "dense", 1.5): (
        "e06bc026f0355ff6a3f8886efd678f473205080f25d4962252083802494029ed",
        {
            "vocals": (4002.706465, 430.999324),
            "drums": (3990.299106, 268.404974),
            "bass": (3071.832263, 102.641977),
            "other": (3299.213973, 128.487925),
        },
    ),
    (2, "sparse", 9.0): (
        "7bf49d3aaa4d67c185cd0ef819dc040ebada644a881f1ad4a372911245df2784",
        {
            "vocals": (2084.448151, 87.069454),
            "drums": (19996.699119, 1750.439579),
            "bass": (14672.530601, 912.575801),
            "other": (14037.345151, 604.489297),
        },
    ),
}


@pytest.mark.parametrize("seed,preset,seconds", list(PINNED))
def test_osc_engine_output_is_pinned(seed: int, preset: str, seconds: float) -> None:
    stems, meta = synthesize_track(seconds, preset, seed)
    meta_sha, levels = PINNED[(seed, preset, seconds)]
    assert hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest() == meta_sha
    assert set(stems) == set(levels)
    for k, (l1, energy) in levels.items():
        x = stems[k].astype(np.float64)
        assert x.shape == (2, round(seconds * 44100))
        assert float(np.abs(x).sum()) == pytest.approx(l1, rel=1e-6), k
        assert float((x**2).sum()) == pytest.approx(energy, rel=1e-6), k
