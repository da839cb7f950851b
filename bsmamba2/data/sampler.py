"""Training examples by random mixing (paper §IV-A, OFFICIAL_SPEC §6) and full-track iteration.

:class:`MixDataset` is map-style: item ``i`` is a pure function of ``(seed, epoch, i)``, so a
``DistributedSampler`` (distinct indices per rank) and any number of DataLoader workers give the same
examples run after run, with no worker seeding to get right. For each item, every stem independently draws a
track and an offset (a SAD-active window when ``activity_threshold`` is set), is read lazily from disk
(8 s, not the whole track), and is augmented; the mixture is the sum of the augmented stems.

Training reads batches through :class:`bsmamba2.data.loader.BatchLoader`, which gives the same tensors as a
plain DataLoader over ``MixDataset`` for about half the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.data import activity, augment, layouts
from bsmamba2.data.musdb import STEMS, TrackInfo, load_track, num_frames, read_stem
from bsmamba2.errors import AudioError, UserError

log = logging.getLogger(__name__)
_NON_FINITE_WARNED: set[Path] = set()  # stem files already warned about (per process)


@dataclass(frozen=True)
class MixRecipe:
    """How random-mix examples are drawn: the fields training's ``data`` section shares with the sampler,
    with the one set of defaults, the official recipe (OFFICIAL_SPEC §6).

    segment_seconds: example length (official 8 s). gain_range: per-stem gain U(lo, hi), None for no gain.
    p_silent: probability that a stem (targets included) is zeroed. p_channel_swap / p_polarity_flip:
    per-stem extras, off by default (not official). p_aligned: probability that an item takes all its stems
    from one track and offset (a SAD-active window of the first target) instead of random mixing, with the
    per-stem augmentation still applied: real songs' accompaniment shares the vocal's key, rhythm and
    sometimes its melody, which random mixes never show; 0 by default (official: random mixing only).
    p_reverb / reverb_rt60: probability that a stem other than the targets is put in a long room, and the
    range of its RT60 in seconds (:func:`bsmamba2.data.augment.reverberate`); off by default (not official).
    p_drive / drive_db: probability that a stem other than the targets is saturated, and the range of the
    saturator's gain in dB (:func:`bsmamba2.data.augment.saturate`); p_mono: probability that a whole item
    (targets included) is folded to mono; both off by default (not official).
    activity_threshold: SAD threshold floor (official 1e-3);
    a stem only draws windows where more than half of its ten sub-chunks are above max(15 % quantile,
    floor) in both channels. None disables SAD. activity_stems: stems SAD applies to; None means every mixed
    stem (official), e.g. ("vocals",) only the target. stems: stems mixed into the mixture; None means every
    stem found (MUSDB: the four). items_per_epoch: dataset length (official 6000 for training, 1200 for
    validation).
    """

    segment_seconds: float = 8.0
    gain_range: tuple[float, float] | None = (0.5, 1.5)
    p_silent: float = 0.1
    p_channel_swap: float = 0.0
    p_polarity_flip: float = 0.0
    p_aligned: float = 0.0
    p_reverb: float = 0.0
    reverb_rt60: tuple[float, float] = (1.5, 6.0)
    p_drive: float = 0.0
    drive_db: tuple[float, float] = (6.0, 24.0)
    p_mono: float = 0.0
    activity_threshold: float | None = activity.DEFAULT_FLOOR
    activity_stems: tuple[str, ...] | None = None
    stems: tuple[str, ...] | None = None
    items_per_epoch: int = 6000

    def check_recipe(self, prefix: str = "") -> None:
        """Raise a one-line UserError for an out-of-range field (``prefix`` names the config section)."""
        if self.segment_seconds <= 0:
            raise UserError(f"{prefix}segment_seconds must be positive, got {self.segment_seconds}")
        if self.gain_range is not None and not 0 <= self.gain_range[0] <= self.gain_range[1]:
            raise UserError(f"{prefix}gain_range must be (lo, hi) with 0 <= lo <= hi, got {self.gain_range}")
        for name in (
            "p_silent",
            "p_channel_swap",
            "p_polarity_flip",
            "p_aligned",
            "p_reverb",
            "p_drive",
            "p_mono",
        ):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise UserError(f"{prefix}{name} must be in [0, 1], got {p}")
        lo, hi = self.reverb_rt60
        if not 0.05 <= lo <= hi <= 12.0:
            raise UserError(
                f"{prefix}reverb_rt60 must be (lo, hi) seconds, 0.05 <= lo <= hi <= 12, got {self.reverb_rt60}"
            )
        lo, hi = self.drive_db
        if not 0.0 <= lo <= hi <= 40.0:
            raise UserError(f"{prefix}drive_db must be (lo, hi) dB, 0 <= lo <= hi <= 40, got {self.drive_db}")
        if self.items_per_epoch < 1:
            raise UserError(f"{prefix}items_per_epoch must be positive, got {self.items_per_epoch}")


@dataclass(frozen=True)
class SamplerConfig(MixRecipe):
    """A :class:`MixRecipe` plus what the model decides: ``targets`` (stems returned as targets, in this
    order) and ``sample_rate``; ``aligned`` takes all stems from one track and offset (official validation)
    instead of random mixing."""

    targets: tuple[str, ...] = ("vocals",)
    sample_rate: int = 44100
    aligned: bool = False

    def __post_init__(self) -> None:
        self.check_recipe()
        if not self.targets:
            raise UserError("targets must name at least one stem")

    @classmethod
    def from_recipe(cls, recipe: MixRecipe, **model_fields: Any) -> SamplerConfig:
        """The recipe's fields (of a MixRecipe or a subclass such as training's DataConfig) plus
        ``targets`` / ``sample_rate`` / ``aligned``."""
        shared = {f.name: getattr(recipe, f.name) for f in fields(MixRecipe)}
        return cls(**shared, **model_fields)

    @classmethod
    def validation(cls, **overrides: object) -> SamplerConfig:
        """The official validation sampling: one SAD-active window of the first target, all stems from the
        same track and offset, no augmentation, 1200 items (re-drawn each epoch via ``set_epoch``)."""
        base = cls(gain_range=None, p_silent=0.0, items_per_epoch=1200, aligned=True)
        return replace(base, **overrides)  # type: ignore[arg-type]


class MixDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random-mix training examples from a multitrack folder (MUSDB18HQ layout or generic).

    ``__getitem__(i)`` returns ``(mixture (2, N), targets (S, 2, N))`` float32 with N = segment samples and
    S = len(cfg.targets); mixture == sum of all augmented stems (targets and the rest).
    """

    def __init__(
        self,
        root: str | Path,
        subset: str = "train",
        cfg: SamplerConfig = SamplerConfig(),
        seed: int = 0,
        layout: str = layouts.DEFAULT_LAYOUT,
    ) -> None:
        self.root = Path(root).expanduser()
        self.cfg = cfg
        self.seed = int(seed)
        self.epoch = 0
        self.segment = int(round(cfg.segment_seconds * cfg.sample_rate))
        self.tracks: list[TrackInfo] = layouts.find_tracks(self.root, subset, stems=None, layout=layout)
        found = {s for t in self.tracks for s in t.stems}
        order = [s for s in STEMS if s in found] + sorted(found - set(STEMS))
        self.stems: tuple[str, ...] = tuple(cfg.stems) if cfg.stems is not None else tuple(order)
        for s in (*cfg.targets, *self.stems):
            if s not in found:
                raise UserError(
                    f"{self.root} ({subset}): no track has stem {s!r} (found: {', '.join(order)})"
                )
        missing_targets = [s for s in cfg.targets if s not in self.stems]
        if missing_targets:
            raise UserError(f"targets {missing_targets} are not among the mixed stems {list(self.stems)}")
        # track indices holding each stem: stems may vary per track in generic folders
        self._holders = {
            s: np.array([k for k, t in enumerate(self.tracks) if s in t.stems]) for s in self.stems
        }
        self._active: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
        if cfg.activity_threshold is not None:
            self._build_activity(subset)
        self._bad: set[int] = set()  # tracks that failed to read in this process (skipped from then on)
        self._layouts: dict[Path, audio.WavLayout | None] = {}  # WAV headers, parsed once per process
        self._raw: dict[tuple[str, int], np.ndarray] = {}  # raw read buffers, reused across items
        self._work: tuple[np.ndarray, np.ndarray] | None = None  # (N, 2) mixing buffers, reused across items

    # ---------------------------------------------------------------------------------------------- setup

    def _build_activity(self, subset: str) -> None:
        cfg = self.cfg
        sad_stems = self.stems if cfg.activity_stems is None else tuple(cfg.activity_stems)
        if cfg.aligned:
            sad_stems = (cfg.targets[0],)
        jobs = [(s, k) for s in sad_stems for k in self._holders.get(s, [])]
        starts: dict[str, list[np.ndarray]] = {s: [] for s in sad_stems}
        bar = tqdm(jobs, desc=f"activity ({subset})", unit="stem", leave=False, disable=len(jobs) < 50)
        for s, k in bar:
            t = self.tracks[k]
            try:
                power = activity.file_power(t.stems[s], self.root)
            except AudioError as e:
                log.warning("track %r: %s; its %s windows are not used", t.name, e, s)
                power = np.zeros((2, 0), np.float32)
            assert cfg.activity_threshold is not None
            starts[s].append(activity.active_starts(power, cfg.segment_seconds, cfg.activity_threshold))
        for s in sad_stems:
            counts = np.array([len(a) for a in starts[s]], dtype=np.int64)
            if counts.sum() == 0:
                log.warning(
                    "no %.1f s window of stem %r passes the activity threshold; drawing it uniformly",
                    cfg.segment_seconds,
                    s,
                )
                continue
            self._active[s] = (np.cumsum(counts), starts[s])

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_raw"] = {}  # per-process read buffers are not worth shipping to workers
        state["_work"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: items are re-drawn for each epoch (call it like DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.cfg.items_per_epoch

    # ---------------------------------------------------------------------------------------------- drawing

    def _draw(self, stem: str, rng: np.random.Generator) -> tuple[int, int]:
        """(track index, start sample at cfg.sample_rate) of a window of ``stem``; SAD-active if enabled."""
        sr = self.cfg.sample_rate
        for _ in range(16):  # a few redraws to step around tracks that failed to read
            if stem in self._active:
                cum, starts = self._active[stem]
                u = int(rng.integers(cum[-1]))
                j = int(np.searchsorted(cum, u, side="right"))
                k = int(self._holders[stem][j])
                t = self.tracks[k]
                frame = int(starts[j][u - (cum[j - 1] if j else 0)])
                # grid start in file samples -> target rate, plus a random jitter below one grid step
                start = int(frame * activity.frame_hop(t.sample_rate) * sr / t.sample_rate)
                start += int(rng.integers(activity.frame_hop(sr)))
            else:
                k = int(rng.choice(self._holders[stem]))
                t = self.tracks[k]
                start = int(rng.integers(max(1, num_frames(t, sr) - self.segment + 1)))
            start = min(start, max(0, num_frames(t, sr) - self.segment))
            if k not in self._bad:
                return k, start
        raise UserError(f"stem {stem!r}: every track holding it failed to read")

    def _source(self, k: int, stem: str, start: int) -> tuple[np.ndarray, float] | None:
        """The stem's segment as ``(samples (N, C), scale)`` with float audio = samples * scale, read raw
        into a reused per-process buffer when the file is a plain WAV (one pread, no decoding), else
        decoded/resampled. None if the track lacks the stem or fails to read (the track is then skipped for
        the rest of the run)."""
        t = self.tracks[k]
        path = t.stems.get(stem)
        if path is None:
            return None
        n = self.segment
        try:
            if t.sample_rate != self.cfg.sample_rate:  # slow path: resampled on load (warned once per file)
                return np.ascontiguousarray(read_stem(t, stem, start, n, self.cfg.sample_rate).T), 1.0
            if path not in self._layouts:
                self._layouts[path] = audio.wav_layout(path)
            lay = self._layouts[path]
            if lay is not None and start + n <= lay.frames:
                key = (lay.dtype, lay.channels)
                if key not in self._raw:
                    self._raw[key] = np.empty((n, lay.channels), lay.dtype)
                audio.read_wav_into(path, lay, start, self._raw[key])
                return self._raw[key], lay.scale
            buf = np.empty((n, t.channels), np.float32)
            audio.read_frames(path, start, buf)
            return buf, 1.0
        except AudioError as e:
            # A file that vanished or broke mid-run: drop the track for this process, keep training.
            self._bad.add(k)
            log.warning("track %r skipped from now on: %s", t.name, e)
            return None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mix = np.empty((2, self.segment), np.float32)
        targets = np.empty((len(self.cfg.targets), 2, self.segment), np.float32)
        self.mix_into(i, mix, targets)
        return torch.from_numpy(mix), torch.from_numpy(targets)

    def batch(
        self, indices: Sequence[int], out: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` stacked, ``(mixture (B, 2, N), targets (B, S, 2, N))``: equal to stacking
        ``self[i]``, but each item is mixed straight into its row, of ``out``'s first B rows if given, else of
        new tensors (in shared memory inside a DataLoader worker, as ``default_collate`` does)."""
        b, n, s = len(indices), self.segment, len(self.cfg.targets)
        if out is None:
            out = output_tensor((b, 2, n)), output_tensor((b, s, 2, n))
        mix, targets = out[0][:b], out[1][:b]
        if (
            mix.shape != (b, 2, n)
            or targets.shape != (b, s, 2, n)
            or {mix.dtype, targets.dtype} != {torch.float32}
        ):
            raise ValueError(
                f"out has shapes {tuple(out[0].shape)}, {tuple(out[1].shape)}, not room for {b} items"
            )
        for row, i in enumerate(indices):
            self.mix_into(int(i), mix[row].numpy(), targets[row].numpy())
        return mix, targets

    def mix_into(self, i: int, mix_out: np.ndarray, targets_out: np.ndarray) -> None:
        """Write item ``i`` into ``mix_out`` (2, N) and ``targets_out`` (S, 2, N), float32 arrays."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        # p_aligned draws from the stream only when set, so random-mix items stay those of earlier releases
        aligned = cfg.aligned or (cfg.p_aligned > 0.0 and bool(rng.random() < cfg.p_aligned))
        shared: tuple[int, int] | None = self._draw(cfg.targets[0], rng) if aligned else None
        # Work in the files' interleaved (N, C) layout: each stem is read raw, scaled into a buffer in one
        # pass (int16 -> float, gain, polarity, mono -> stereo by broadcasting) and added to the mixture;
        # only the outputs are transposed to (2, N). The (N, 2) buffers are reused from item to item.
        if self._work is None:
            self._work = (np.empty((self.segment, 2), np.float32), np.empty((self.segment, 2), np.float32))
        mix, buf = self._work
        mix.fill(0.0)
        written = [False] * len(cfg.targets)
        used: list[tuple[int, str, int]] = []  # (track, stem, start) of every segment mixed in
        for s in self.stems:
            silent, gain, swap, flip = augment.draw(
                rng, cfg.gain_range, cfg.p_silent, cfg.p_channel_swap, cfg.p_polarity_flip
            )
            src = None
            for _ in range(4):
                if silent:
                    break
                k, start = shared if shared is not None else self._draw(s, rng)
                src = self._source(k, s, start)
                if src is not None or shared is not None:
                    break
            if src is None:
                continue
            used.append((k, s, start))
            x, scale = src
            if swap and x.shape[1] == 2:
                x = x[:, ::-1]
            np.multiply(x, np.float32((-gain if flip else gain) * scale), out=buf, casting="unsafe")
            room = augment.draw_reverb(rng, cfg.p_reverb, cfg.reverb_rt60) if s not in cfg.targets else None
            if room is not None:
                augment.reverberate(buf, room[0], room[1], cfg.sample_rate, room[2])
            drive = augment.draw_drive(rng, cfg.p_drive, cfg.drive_db) if s not in cfg.targets else None
            if drive is not None:
                augment.saturate(buf, drive)
            mix += buf
            if s in cfg.targets:
                j = cfg.targets.index(s)
                targets_out[j] = buf.T
                written[j] = True
        for j, done in enumerate(written):
            if not done:  # silent, or its track failed to read
                targets_out[j] = 0.0
        if cfg.p_mono > 0.0 and rng.random() < cfg.p_mono:  # linear: the sum still holds
            mix[:] = mix.mean(axis=1, keepdims=True)
            targets_out[:] = targets_out.mean(axis=1, keepdims=True)
        mix_out[...] = mix.T
        if not math.isfinite(float(mix.sum())):  # one pass over the mixture; NaN/inf in any stem land here
            self._warn_non_finite(used)

    def _warn_non_finite(self, used: list[tuple[int, str, int]]) -> None:
        """Warn, once per file and process, about each stem file whose segment just read holds NaN or inf."""
        for k, stem, start in used:
            path = self.tracks[k].stems[stem]
            src = None if path in _NON_FINITE_WARNED else self._source(k, stem, start)
            if src is not None and not np.isfinite(src[0]).all():
                _NON_FINITE_WARNED.add(path)
                log.warning(
                    "track %r: %s holds NaN or infinite samples; the training steps that mix it in get a "
                    "NaN loss and are skipped",
                    self.tracks[k].name,
                    path,
                )


def output_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized float32 tensor, in shared memory inside a DataLoader worker (so that it is sent to
    the main process without a copy) and in NumPy-allocated memory (huge pages where available) elsewhere."""
    if torch.utils.data.get_worker_info() is None:
        return torch.from_numpy(np.empty(shape, np.float32))
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


def iter_tracks(
    root: str | Path,
    subset: str = "valid",
    stems: Sequence[str] | None = None,
    layout: str = layouts.DEFAULT_LAYOUT,
) -> Iterator[tuple[TrackInfo, np.ndarray, dict[str, np.ndarray]]]:
    """Full tracks for validation/test: yields ``(info, mixture (2, N), {stem: reference (2, N)})`` one track
    at a time (float32, 44.1 kHz). A track that fails to read is skipped with a warning."""
    for info in layouts.find_tracks(root, subset, stems=stems, layout=layout):
        try:
            mix, refs = load_track(info, stems)
        except AudioError as e:
            log.warning("skipping track %r: %s", info.name, e)
            continue
        yield info, mix, refs
