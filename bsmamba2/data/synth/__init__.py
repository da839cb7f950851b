"""Synthetic multitrack corpus in MUSDB18HQ layout, with controlled vocal sparsity.

Each track is a procedurally composed song (:mod:`.composer`) rendered to vocals / drums / bass / other by
one of two engines: "osc" (:mod:`.render`, :mod:`.instruments`, :mod:`.voice`: oscillators and a formant
singer) or "samples" (:mod:`.samples`: SoundFont instruments, Hydrogen drum kits, a bank of sung phrases). The vocal stem is exactly zero outside the phrases
listed in the track's ``meta.json``; the mixture equals the sum of the stems exactly (float32 WAV).

>>> from bsmamba2.data.synth import synthesize_corpus
>>> synthesize_corpus("synth", n_train=20, n_valid=4, n_test=4, seconds=30, preset="mixed")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.atomic import atomic_write
from bsmamba2.data.synth.composer import compose
from bsmamba2.data.synth.phrasing import PRESET_NAMES
from bsmamba2.data.synth.render import STEM_ORDER, render_song, song_meta
from bsmamba2.errors import UserError

__all__ = ["ENGINES", "PRESET_NAMES", "synthesize_corpus", "synthesize_track", "write_track", "track_seed"]

log = logging.getLogger(__name__)
SUBSET_IDS = {"train": 0, "valid": 1, "test": 2}
ENGINES = ("osc", "samples")


def synthesize_track(
    seconds: float,
    preset: str,
    seed: int,
    sample_rate: int = 44100,
    engine: str = "osc",
    assets: str | Path | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Compose and render one song: ``({stem: (2, N) float32}, meta)`` with N = round(seconds * sample_rate).

    ``preset``: vocal sparsity, one of sparse | medium | dense | mixed | instrumental. ``engine``: "osc"
    (oscillator and formant synthesis, no assets) or "samples" (SoundFont instruments, Hydrogen drum kits,
    the sung-phrase bank in ``assets``; see :mod:`.samples`). Deterministic in ``seed``. Stems are on a
    2^-22 grid, so ``sum(stems.values())`` is exact in float32 in any order.
    """
    if preset not in PRESET_NAMES:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESET_NAMES)})")
    if seconds <= 0:
        raise UserError(f"track length must be > 0 seconds, got {seconds}")
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "samples":
        return _samples_engine().synthesize_samples_track(seconds, preset, seed, assets, sample_rate)
    rng = np.random.default_rng(seed)
    song = compose(float(seconds), preset, rng)
    stems = render_song(song, sample_rate, rng)
    return stems, song_meta(song, sample_rate, seed)


def _samples_engine() -> Any:
    """The samples engine, imported on first use: it needs scipy (and tinysoundfont) that the osc engine and
    the rest of the package do not."""
    try:
        from bsmamba2.data.synth import samples
    except ImportError as e:
        raise UserError(f"the samples engine needs {e.name}: pip install 'bsmamba2[synth]'") from None
    return samples


def write_track(
    folder: str | Path, stems: dict[str, np.ndarray], meta: dict[str, Any], sample_rate: int = 44100
) -> Path:
    """Write ``{stem}.wav``, ``mixture.wav`` (float32 WAV) and ``meta.json`` into ``folder``, then read the
    files back and check that the mixture equals the sum of the stems exactly (raises RuntimeError if not)."""
    folder = Path(folder)
    mixture = np.asarray(np.sum(np.stack([stems[s] for s in STEM_ORDER]), axis=0, dtype=np.float32))  # (2, N)
    for s in STEM_ORDER:
        audio.write(folder / f"{s}.wav", stems[s], sample_rate, subtype="FLOAT")
    audio.write(folder / "mixture.wav", mixture, sample_rate, subtype="FLOAT")
    with atomic_write(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    back = {s: audio.read(folder / f"{s}.wav")[0] for s in (*STEM_ORDER, "mixture")}
    total = back["vocals"] + back["drums"] + back["bass"] + back["other"]
    if not np.array_equal(total, back["mixture"]):
        raise RuntimeError(
            f"{folder}: mixture != sum of stems after writing (max error {np.abs(total - back['mixture']).max()})"
        )
    return folder


def track_seed(seed: int, subset: str, index: int) -> int:
    """The seed of track ``index`` of ``subset`` in a corpus of seed ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, SUBSET_IDS[subset], index]).generate_state(1)[0])


def _job(args: tuple[Path, float, str, int, int, str, str | None]) -> tuple[str, float]:
    folder, seconds, preset, seed, sr, engine, assets = args
    t0 = time.process_time()
    stems, meta = synthesize_track(seconds, preset, seed, sr, engine, assets)
    write_track(folder, stems, meta, sr)
    return folder.name, time.process_time() - t0


def _init_worker() -> None:
    import torch  # one thread per process: the pool already uses every core

    torch.set_num_threads(1)


def synthesize_corpus(
    out: str | Path,
    n_train: int,
    n_valid: int,
    n_test: int,
    seconds: float = 30.0,
    preset: str = "mixed",
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    sample_rate: int = 44100,
    engine: str = "osc",
    assets: str | Path | None = None,
) -> Path:
    """Write a corpus ``out/{train,valid,test}/synth-<subset>-<i>/`` in MUSDB18HQ layout (+ ``meta.json`` per
    track and ``out/corpus.json``). Deterministic in ``seed`` whatever ``workers``. ``engine``/``assets``: see
    :func:`synthesize_track`. Returns ``out``."""
    if min(n_train, n_valid, n_test) < 0 or n_train + n_valid + n_test == 0:
        raise UserError(f"track counts must be >= 0 and not all 0, got {n_train}/{n_valid}/{n_test}")
    if preset not in PRESET_NAMES:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESET_NAMES)})")
    if seconds <= 0:
        raise UserError(f"track length must be > 0 seconds, got {seconds}")
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "samples":  # fail before writing anything if a source is missing
        _samples_engine().Assets.locate(assets)
    asset_arg = None if assets is None else str(Path(assets).expanduser().resolve())
    root = Path(out).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{root}: cannot create output folder ({e.strerror or e})") from None
    jobs = []
    for subset, count in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        for i in range(count):
            folder = root / subset / f"synth-{subset}-{i:04d}"
            jobs.append(
                (folder, float(seconds), preset, track_seed(seed, subset, i), sample_rate, engine, asset_arg)
            )
    info: dict[str, Any] = {
        "generator": "bsmamba2.synth", "n_train": n_train, "n_valid": n_valid, "n_test": n_test,
        "seconds": seconds, "preset": preset, "seed": seed, "sample_rate": sample_rate,
    }  # fmt: skip
    if engine != "osc":  # the osc engine's corpus.json stays as it was
        info.update(engine=engine, assets=asset_arg)
    with atomic_write(root / "corpus.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    bar = tqdm(total=len(jobs), desc="synth", unit="track", disable=not progress)
    cpu = 0.0
    if workers == 1 or len(jobs) == 1:
        for j in jobs:
            cpu += _job(j)[1]
            bar.update()
    else:
        ctx = mp.get_context("spawn")  # torch + fork is fragile; spawn is safe everywhere
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            for _, c in pool.map(_job, jobs):
                cpu += c
                bar.update()
    bar.close()
    log.info("wrote %d tracks to %s (%.1f s of CPU per minute of audio)", len(jobs), root,
             cpu / max(len(jobs) * seconds / 60, 1e-9))  # fmt: skip
    return root
