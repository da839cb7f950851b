"""Random-mix sampler: shapes, exact mixture, randomness across stems, determinism, augmentation, SAD."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bsmamba2 import audio
from bsmamba2.data import activity, augment, musdb
from bsmamba2.data.musdb import STEMS
from bsmamba2.data.sampler import MixDataset, SamplerConfig, iter_tracks

SR = 44100
SEG = 0.5  # seconds per example: keeps tests fast
N_TRACKS = 5
TRACK_FRAMES = 3 * SR


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.setattr(musdb, "_HEADERS", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Tracks whose stems identify themselves: left = track id / 10 + stem id / 100, right = sample index
    ramp (offset / 2^22) so each target shows which track and offset it came from."""
    root = tmp_path / "db"
    ramp = np.arange(TRACK_FRAMES, dtype=np.float64) / 2**22
    for k in range(N_TRACKS):
        for j, s in enumerate(STEMS):
            x = np.stack([np.full(TRACK_FRAMES, (k + 1) / 10 + j / 100), ramp]).astype(np.float32)
            audio.write(root / "train" / f"track{k}" / f"{s}.wav", x, SR, subtype="FLOAT")
    return root


def plain(**kw) -> SamplerConfig:
    """No augmentation, no SAD: targets are the raw stems."""
    base = SamplerConfig(
        segment_seconds=SEG, gain_range=None, p_silent=0.0, activity_threshold=None, items_per_epoch=40
    )
    return replace(base, **kw)


def ident(x: torch.Tensor) -> tuple[int, int]:
    """(track id, start offset) of an un-augmented target (2, N) from the corpus above."""
    return int(round(float(x[0, 0]) * 10 - 0.1 * 0)), int(round(float(x[1, 0]) * 2**22))


def test_shapes_and_mixture_is_sum_of_stems(corpus: Path) -> None:
    ds = MixDataset(
        corpus, "train", replace(SamplerConfig(segment_seconds=SEG, activity_threshold=None), targets=STEMS)
    )
    assert len(ds) == 6000 and ds.stems == STEMS
    for i in range(5):
        mix, tgt = ds[i]
        assert mix.shape == (2, int(SEG * SR)) and tgt.shape == (4, 2, int(SEG * SR))
        assert mix.dtype == torch.float32 and tgt.dtype == torch.float32
        torch.testing.assert_close(mix, tgt.sum(0), atol=1e-6, rtol=0)


def test_stems_drawn_independently_with_random_offsets(corpus: Path) -> None:
    ds = MixDataset(corpus, "train", plain(targets=STEMS))
    same_track, offsets, tracks = 0, set(), set()
    for i in range(30):
        _, tgt = ds[i]
        ids = [int(np.floor(float(tgt[j, 0, 0]) * 10 + 1e-4)) for j in range(4)]
        starts = [int(round(float(tgt[j, 1, 0]) * 2**22)) for j in range(4)]
        same_track += len(set(ids)) == 1
        offsets.update(starts)
        tracks.update(ids)
        # each stem's samples are consecutive samples of its file (a lazily read segment)
        np.testing.assert_allclose(np.diff(tgt[0, 1].numpy().astype(np.float64)) * 2**22, 1.0, atol=1e-3)
    assert tracks == set(range(1, N_TRACKS + 1))
    assert same_track < 10  # 4 independent draws from 5 tracks: all equal with probability 1/125
    assert len(offsets) > 100


def test_p_aligned_mixes_coherent_items_among_random_ones(corpus: Path) -> None:
    def draws(ds: MixDataset, n: int = 40) -> list[tuple[set[int], set[int]]]:
        out = []
        for i in range(n):
            tgt = ds[i][1]
            out.append(
                (
                    {int(np.floor(float(tgt[j, 0, 0]) * 10 + 1e-4)) for j in range(4)},
                    {int(round(float(tgt[j, 1, 0]) * 2**22)) for j in range(4)},
                )
            )
        return out

    coherent = draws(MixDataset(corpus, "train", plain(targets=STEMS, p_aligned=1.0)))
    assert all(len(ids) == 1 and len(starts) == 1 for ids, starts in coherent)  # one track, one offset
    assert len({next(iter(ids)) for ids, _ in coherent}) > 1  # ... drawn afresh per item
    half = draws(MixDataset(corpus, "train", plain(targets=STEMS, p_aligned=0.5)))
    n_coherent = sum(len(ids) == 1 and len(starts) == 1 for ids, starts in half)
    assert 8 < n_coherent < 32
    # gains still apply per stem in coherent items, and the mixture stays their exact sum
    ds = MixDataset(corpus, "train", plain(targets=STEMS, p_aligned=1.0, gain_range=(0.5, 1.5)))
    mix, tgt = ds[3]
    torch.testing.assert_close(mix, tgt.sum(0), atol=1e-6, rtol=0)
    levels = {round(float(tgt[j, 1, 0] / tgt[0, 1, 0]), 4) for j in range(4) if float(tgt[0, 1, 0])}
    assert len(levels) > 1 or not float(tgt[0, 1, 0])
    with pytest.raises(Exception, match="p_aligned"):
        plain(p_aligned=1.5)


def test_reverberate_is_the_dry_signal_plus_the_room() -> None:
    ir = augment.room_ir(0.5, SR, 2, seed=3)
    assert ir.shape == (SR // 2, 2)
    np.testing.assert_allclose((ir.astype(np.float64) ** 2).sum(0), 1.0, rtol=1e-5)
    e = (ir.astype(np.float64) ** 2).sum(1)
    assert e[-SR // 20 :].sum() < 1e-4 * e[: SR // 20].sum()  # 60 dB down by the end
    x = np.zeros((SR, 2), np.float32)
    x[100] = 1.0  # an impulse: the output is the dry impulse and the room after it
    augment.reverberate(x, 0.5, 0.8, SR, seed=3)
    expected = np.zeros((SR, 2))
    expected[100 : 100 + len(ir)] = 0.8 * ir
    expected[100] += 1 - 0.4
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert augment.draw_reverb(np.random.default_rng(0), 0.0, (1.5, 6.0)) is None


def test_p_reverb_puts_the_accompaniment_in_a_room_and_leaves_the_target(corpus: Path) -> None:
    def accompaniment_wobble(p: float) -> list[float]:
        ds = MixDataset(corpus, "train", plain(p_reverb=p))
        out = []
        for i in range(6):
            mix, tgt = ds[i]
            track, _ = ident(tgt[0])
            assert 1 <= track <= N_TRACKS  # the vocal target is still a raw stem ...
            np.testing.assert_allclose(np.diff(tgt[0, 1].numpy().astype(np.float64)) * 2**22, 1.0, atol=1e-3)
            rest = (mix - tgt[0])[0].numpy().astype(np.float64)  # the other stems' constant left channels
            out.append(float(rest[len(rest) // 2 :].std()))
        return out

    assert max(accompaniment_wobble(0.0)) < 1e-6
    assert min(accompaniment_wobble(1.0)) > 1e-3  # ... while every item's accompaniment rings
    again = MixDataset(corpus, "train", plain(p_reverb=1.0))
    torch.testing.assert_close(
        again[4][0], MixDataset(corpus, "train", plain(p_reverb=1.0))[4][0], atol=0, rtol=0
    )
    with pytest.raises(Exception, match="p_reverb"):
        plain(p_reverb=-0.1)
    with pytest.raises(Exception, match="reverb_rt60"):
        plain(reverb_rt60=(3.0, 1.0))


def test_saturate_adds_harmonics_and_keeps_the_level() -> None:
    t = np.arange(SR) / SR
    x = (0.3 * np.stack([np.sin(2 * np.pi * 100 * t), 0.5 * np.sin(2 * np.pi * 100 * t)], 1)).astype(
        np.float32
    )
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    y = x.copy()
    augment.saturate(y, 18.0)
    assert float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) == pytest.approx(rms, rel=1e-5)
    spec = np.abs(np.fft.rfft(y[:, 0]))
    assert spec[300] > 0.1 * spec[100] and spec[200] < 1e-3 * spec[100]  # odd harmonics, tanh is odd
    z = np.zeros((100, 2), np.float32)
    augment.saturate(z, 18.0)
    assert not z.any()
    rng = np.random.default_rng(0)
    assert augment.draw_drive(rng, 0.0, (6.0, 24.0)) is None
    assert rng.random() == np.random.default_rng(0).random()  # p = 0 drew nothing
    assert 6.0 <= augment.draw_drive(rng, 1.0, (6.0, 24.0)) <= 24.0  # type: ignore[operator]


def test_p_drive_bends_the_accompaniment_and_p_mono_folds_the_item(corpus: Path) -> None:
    def curvature(p: float) -> float:
        ds = MixDataset(corpus, "train", plain(p_drive=p, drive_db=(20.0, 20.0)))
        worst = 0.0
        for i in range(6):
            mix, tgt = ds[i]
            # the vocal target is still a raw stem: a ramp on the right channel
            np.testing.assert_allclose(np.diff(tgt[0, 1].numpy().astype(np.float64)) * 2**22, 1.0, atol=1e-3)
            rest = (mix - tgt[0])[1].numpy().astype(np.float64)  # three ramps, bent when saturated
            worst = max(worst, float(np.abs(np.diff(rest, 2)).max()))
        return worst

    assert curvature(0.0) < 1e-9
    assert curvature(1.0) > 1e-7
    ds = MixDataset(corpus, "train", plain(p_mono=1.0, targets=STEMS))
    for i in range(4):
        mix, tgt = ds[i]
        torch.testing.assert_close(mix[0], mix[1], atol=0, rtol=0)
        torch.testing.assert_close(tgt[:, 0], tgt[:, 1], atol=0, rtol=0)
        torch.testing.assert_close(mix, tgt.sum(0), atol=1e-6, rtol=0)
    mix, _ = MixDataset(corpus, "train", plain(targets=STEMS))[0]
    assert not torch.equal(mix[0], mix[1])
    with pytest.raises(Exception, match="p_mono"):
        plain(p_mono=1.5)
    with pytest.raises(Exception, match="drive_db"):
        plain(drive_db=(10.0, 50.0))


def test_determinism_per_seed_epoch_and_index(corpus: Path) -> None:
    cfg = SamplerConfig(segment_seconds=SEG, activity_threshold=None, p_channel_swap=0.5, p_polarity_flip=0.5)
    a, b, c = (
        MixDataset(corpus, cfg=cfg, seed=1),
        MixDataset(corpus, cfg=cfg, seed=1),
        MixDataset(corpus, cfg=cfg, seed=2),
    )
    for i in (0, 7, 39):
        torch.testing.assert_close(a[i], b[i], atol=0, rtol=0)
    assert not torch.equal(a[0][0], c[0][0])
    # item i does not depend on which items were read before (any worker / rank order)
    first = a[5]
    _ = [a[j] for j in range(10)]
    torch.testing.assert_close(a[5], first, atol=0, rtol=0)
    a.set_epoch(1)
    assert not torch.equal(a[5][0], first[0])


def test_dataloader_workers_and_ranks_match_direct_indexing(corpus: Path) -> None:
    ds = MixDataset(corpus, cfg=plain(items_per_epoch=8), seed=3)
    direct = torch.stack([ds[i][0] for i in range(8)])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batched = torch.cat([m for m, _ in loader])
    torch.testing.assert_close(batched, direct, atol=0, rtol=0)
    # two DDP ranks see disjoint indices whose items equal the single-process items
    ranks = [
        list(torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0))
        for r in (0, 1)
    ]
    assert not set(ranks[0]) & set(ranks[1])
    for i in ranks[1][:2]:
        torch.testing.assert_close(
            MixDataset(corpus, cfg=plain(items_per_epoch=8), seed=3)[i][0], direct[i], atol=0, rtol=0
        )


def test_augmentations(corpus: Path) -> None:
    ref = MixDataset(corpus, cfg=plain(), seed=0)[0][1]
    gained = MixDataset(corpus, cfg=plain(gain_range=(2.0, 2.0)), seed=0)[0][1]
    torch.testing.assert_close(gained, 2 * ref)
    swapped = MixDataset(corpus, cfg=plain(p_channel_swap=1.0), seed=0)[0][1]
    torch.testing.assert_close(swapped, ref.flip(1))
    flipped = MixDataset(corpus, cfg=plain(p_polarity_flip=1.0), seed=0)[0][1]
    torch.testing.assert_close(flipped, -ref)
    mix, tgt = MixDataset(corpus, cfg=plain(p_silent=1.0), seed=0)[0]
    assert not mix.any() and not tgt.any()
    # p_silent = 0.5: some examples have a silent vocal target and a non-silent mixture
    ds = MixDataset(corpus, cfg=plain(p_silent=0.5), seed=0)
    silent = [not ds[i][1].any() for i in range(20)]
    assert 0 < sum(silent) < 20


def test_activity_matches_official_rule_on_grid() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 20 * SR)) * 0.1).astype(np.float32)
    x[:, 3 * SR : 9 * SR] = 0.0  # a silent stretch
    x[1, 12 * SR : 14 * SR] *= 1e-4  # right channel nearly silent
    hop = activity.frame_hop(SR)
    starts = set(activity.active_starts(activity.frame_power(x, hop), 8.0).tolist())
    for k in range(0, 20 * 10 - 80 + 1, 7):
        expect = activity.is_active(x[:, k * hop : k * hop + 8 * SR])
        assert (k in starts) == expect, k
    assert 90 in starts and 40 not in starts  # 9-17 s is active, 4-12 s mostly silent


def test_activity_threshold_skips_silent_target_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "db"
    for k in range(3):
        for s in STEMS:
            x = (0.1 * rng.standard_normal((2, 4 * SR))).astype(np.float32)
            if s == "vocals":
                x[:, : 3 * SR] = 0.0  # vocals only in the last second
            audio.write(root / f"t{k}" / f"{s}.wav", x, SR, subtype="FLOAT")
    cfg = SamplerConfig(segment_seconds=SEG, gain_range=None, p_silent=0.0, items_per_epoch=30)
    with_sad = MixDataset(root, cfg=cfg)
    # SAD keeps windows with more than half of their sub-chunks active (minus < 0.1 s of start jitter)
    assert all(float((with_sad[i][1] != 0).float().mean()) > 0.4 for i in range(30))
    assert (root / ".bsmamba2_cache" / "power").is_dir()  # activity tables cached
    without = MixDataset(root, cfg=replace(cfg, activity_threshold=None))
    assert sum(float(without[i][1].abs().max()) == 0.0 for i in range(30)) > 10


def test_validation_config_aligns_stems(corpus: Path) -> None:
    ds = MixDataset(
        corpus, "train", SamplerConfig.validation(segment_seconds=SEG, targets=STEMS, activity_threshold=None)
    )
    assert len(ds) == 1200
    for i in range(5):
        _, tgt = ds[i]
        ids = {int(np.floor(float(tgt[j, 0, 0]) * 10 + 1e-4)) for j in range(4)}
        starts = {int(round(float(tgt[j, 1, 0]) * 2**22)) for j in range(4)}
        assert len(ids) == 1 and len(starts) == 1


@pytest.mark.parametrize("warm", [False, True])
def test_track_breaking_mid_run_is_skipped(corpus: Path, caplog, warm: bool) -> None:
    ds = MixDataset(corpus, cfg=plain(targets=STEMS))
    if warm:  # headers already parsed by the fast path, then the files are truncated in place
        _ = [ds[i] for i in range(20, 30)]
        assert any(lay is not None for lay in ds._layouts.values())
    for s in STEMS:
        (corpus / "train" / "track0" / f"{s}.wav").write_bytes(b"corrupted")
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(20)]
    assert "track0" in caplog.text
    ids = {int(np.floor(float(t[j, 0, 0]) * 10 + 1e-4)) for _, t in items for j in range(4)}
    assert 1 not in ids and ids  # track id 1 (= track0) never used after it broke


def test_unknown_target_and_iter_tracks(corpus: Path) -> None:
    from bsmamba2.errors import UserError

    with pytest.raises(UserError, match="piano"):
        MixDataset(corpus, cfg=plain(targets=("piano",)))
    got = list(iter_tracks(corpus, "train", stems=["vocals"]))
    assert len(got) == N_TRACKS
    info, mix, refs = got[0]
    assert mix.shape == (2, TRACK_FRAMES) and list(refs) == ["vocals"]


@pytest.mark.parametrize(
    "fmt", [("wav", "PCM_16", 2), ("wav", "FLOAT", 1), ("wav", "PCM_24", 2), ("flac", "PCM_16", 2)]
)
def test_fast_raw_read_matches_decoder(tmp_path: Path, fmt) -> None:
    ext, subtype, channels = fmt
    rng = np.random.default_rng(1)
    for s in STEMS:
        x = (0.3 * rng.standard_normal((channels, 2 * SR))).clip(-1, 1).astype(np.float32)
        audio.write(tmp_path / "t" / f"{s}.{ext}", x, SR, subtype=subtype)
    ds = MixDataset(tmp_path, cfg=plain())
    for start in (0, 12345, 2 * SR - ds.segment):
        src = ds._source(0, "vocals", start)
        assert src is not None
        got = np.broadcast_to(src[0] * src[1], (ds.segment, 2)).T
        ref = musdb.read_stem(ds.tracks[0], "vocals", start, ds.segment)
        np.testing.assert_allclose(got, ref, atol=1e-7, rtol=0)
    assert (ds._layouts[ds.tracks[0].stems["vocals"]] is not None) == (ext == "wav" and subtype != "PCM_24")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_stem_is_warned_once_naming_the_file(corpus: Path, caplog, bad: float) -> None:
    path = corpus / "train" / "track2" / "bass.wav"
    x, _ = audio.read(path)
    x[:, ::1000] = bad  # spread out, so that every window of the file holds some
    audio.write(path, x, SR, subtype="FLOAT")
    ds = MixDataset(corpus, "train", plain(targets=STEMS))
    with caplog.at_level(logging.WARNING, logger="bsmamba2"):
        items = [ds[i] for i in range(40)]
    warned = [r.getMessage() for r in caplog.records if "bass.wav" in r.getMessage()]
    assert len(warned) == 1 and "track2" in warned[0] and "NaN" in warned[0]
    assert sum(not torch.isfinite(m).all() for m, _ in items) >= 2  # used more than once, passed on as is
