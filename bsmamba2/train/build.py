"""Everything a training run is built from, in the order the loop needs it: device, data, model, EMA,
optimizer, and the state a checkpoint restores.

The order of the steps that draw random numbers (model init after the seeds, nothing random in between)
is part of the regression vector: keep it.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler, Sampler

from bsmamba2.checkpoints import load_state, load_weights
from bsmamba2.data import layouts
from bsmamba2.data.loader import BatchLoader
from bsmamba2.data.musdb import TrackInfo
from bsmamba2.data.sampler import MixDataset, SamplerConfig
from bsmamba2.device import DistEnv, resolve_precision
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.model.mixers import mamba2
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.train import ckpt
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.ema import EMA

log = logging.getLogger(__name__)


# ---- device and precision ---------------------------------------------------------------------------------
def train_device(name: str, env: DistEnv) -> torch.device:
    """Where this process trains: "auto" = CUDA if available, else CPU; under torchrun cuda:LOCAL_RANK."""
    use_cuda = torch.cuda.is_available() if name == "auto" else name.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available")
    if env.launched:
        return torch.device(f"cuda:{env.local_rank}" if use_cuda else "cpu")
    return torch.device(name if name not in ("auto", "cuda") else ("cuda" if use_cuda else "cpu"))


def train_precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the forward pass (Table I: bf16 on CUDA); CPU training always runs fp32."""
    return resolve_precision(device, cfg.precision) if device.type == "cuda" else None


def seed_everything(seed: int) -> None:
    """The same initial weights on every process (DDP also broadcasts rank 0's)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---- data -------------------------------------------------------------------------------------------------
def training_data(cfg: TrainConfig, env: DistEnv) -> tuple[MixDataset, DistributedSampler[int]]:
    """The random-mix dataset and this process's share of its indices.

    DistributedSampler gives each process its own indices; an item is a pure function of (seed, epoch,
    index), so the clips are random already and need no shuffling.
    """
    sampler_cfg = SamplerConfig.from_recipe(
        cfg.data, targets=cfg.model.stems, sample_rate=cfg.model.sample_rate
    )
    dataset = MixDataset(
        cfg.data.root, subset=cfg.data.train_subset, cfg=sampler_cfg, seed=cfg.seed, layout=cfg.data.layout
    )
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False, drop_last=True
    )
    if len(sampler) // cfg.batch_size == 0:  # micro-batches per process and epoch
        raise UserError(
            f"data.items_per_epoch={cfg.data.items_per_epoch} is too small for batch_size={cfg.batch_size} "
            f"on {env.world_size} process(es)"
        )
    return dataset, sampler


def valid_tracks(cfg: TrainConfig) -> list[TrackInfo]:
    """The validation tracks, found now rather than at the first validation (none if validation is off)."""
    if not cfg.valid.every:
        return []
    tracks = layouts.find_tracks(
        cfg.data.root, cfg.valid.subset, stems=cfg.model.stems, layout=cfg.data.layout
    )
    return tracks[: cfg.valid.max_tracks or None]


class _SkipSampler(Sampler[int]):
    """``base``'s indices without the first ``skip`` (to resume in the middle of an epoch)."""

    def __init__(self, base: DistributedSampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.base):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def micro_batches(
    dataset: MixDataset,
    sampler: DistributedSampler[int],
    cfg: TrainConfig,
    epoch: int,
    position: int,
    pin: bool,
) -> Generator[tuple[int, int, Tensor, Tensor], None, None]:
    """Endless (epoch, position, mixture (B, 2, N), targets (B, S, 2, N)) from (epoch, position) on.

    ``position`` counts the micro-batches of ``epoch`` consumed so far, including the one yielded.
    """
    while True:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = BatchLoader(
            dataset,
            _SkipSampler(sampler, position * cfg.batch_size),
            cfg.batch_size,
            num_workers=cfg.data.num_workers,
            pin_memory=pin,
            drop_last=True,
        )
        for mix, targets in loader:
            position += 1
            yield epoch, position, mix, targets
        epoch, position = epoch + 1, 0


# ---- model, EMA, optimizer --------------------------------------------------------------------------------
def make_model(cfg: TrainConfig, device: torch.device) -> BandSplitSeparator:
    """The model to train, on ``device``. ``fused`` auto turns the compiled Mamba2 glue on on CUDA when
    Triton (torch.compile's GPU code generator) is installed; ``kernels`` builds every bidirectional Mamba2
    block as ``mixer_triton.KernelMamba2Block`` (CUDA and the Triton scan only), which with ``recompute``
    recomputes inside the block instead of checkpointing the dual path."""
    triton = importlib.util.find_spec("triton") is not None
    auto = device.type == "cuda" and triton
    fused = cfg.fused in ("on", "kernels") or (cfg.fused == "auto" and auto)
    kernels = cfg.fused == "kernels"
    if kernels and not (device.type == "cuda" and triton and cfg.backend in ("auto", "triton")):
        raise UserError("fused=kernels needs a CUDA device, Triton and backend auto or triton")
    old = mamba2.KERNEL_BLOCKS
    try:
        if kernels:
            mamba2.KERNEL_BLOCKS = "input" if cfg.recompute else "all"
        backend = "triton" if kernels else cfg.backend
        model = build_model(cfg.model, backend=backend, device=device, fused=fused)
    finally:
        mamba2.KERNEL_BLOCKS = old
    if cfg.init_from:
        init_weights(model, cfg.init_from)
    model.recompute = cfg.recompute and not kernels  # activation checkpointing: a training-only switch
    return model


def init_weights(model: BandSplitSeparator, path: str) -> None:
    """Copy the weights of the model file ``path`` into ``model``; its config must be the run's model config."""
    cfg, state = load_state(path)
    if cfg.to_dict() != model.cfg.to_dict():
        raise UserError(f"init_from={path}: its model config differs from this run's model section")
    load_weights(model, state, source=path)


def make_ema(model: BandSplitSeparator, cfg: TrainConfig) -> EMA[BandSplitSeparator] | None:
    return EMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over every parameter (OFFICIAL_SPEC §6); the fused CUDA kernel on GPU."""
    o = cfg.optim
    return torch.optim.AdamW(
        model.parameters(),
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=device.type == "cuda" or None,
    )


def log_setup(model: BandSplitSeparator, cfg: TrainConfig, env: DistEnv, device: torch.device) -> None:
    if env.is_main:
        log.info(
            "%s, %.2fM parameters, %s, %d process(es) x batch %d x accumulation %d = %d clips per step",
            cfg.model.mixer,
            sum(p.numel() for p in model.parameters()) / 1e6,
            device,
            env.world_size,
            cfg.batch_size,
            cfg.grad_accum,
            env.world_size * cfg.batch_size * cfg.grad_accum,
        )


def wrap_for_training(
    model: BandSplitSeparator, cfg: TrainConfig, env: DistEnv, device: torch.device
) -> nn.Module:
    """What the step calls: ``model`` compiled (``compile``) and DDP-wrapped (under torchrun)."""
    train_model: nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)  # type: ignore[assignment]
    if env.launched:
        train_model = DDP(train_model, device_ids=[env.local_rank] if device.type == "cuda" else None)
    return train_model


# ---- the state a checkpoint holds -------------------------------------------------------------------------
@dataclass
class TrainState:
    """Counters of the run: optimizer steps, data epoch and micro-batch position, the non-finite streak and
    the best validation score (``valid.best_metric``) with its step (-1: never validated)."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    bad_streak: int = 0
    best: float | None = None
    best_step: int = -1


def restore(
    resume_dir: Path,
    model: BandSplitSeparator,
    ema: EMA[BandSplitSeparator] | None,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    env: DistEnv,
) -> TrainState:
    """Load weights, EMA, optimizer and RNG states from a checkpoint folder; return its counters."""
    saved = ckpt.load_checkpoint(resume_dir, model, ema.module if ema else None)
    optimizer.load_state_dict(saved["optimizer"])
    state = TrainState(
        step=int(saved["step"]),
        epoch=int(saved["epoch"]),
        position=int(saved["position"]),
        bad_streak=int(saved["bad_streak"]),
        best=saved["best"],
        best_step=int(saved["best_step"]),
    )
    if env.is_main:
        ckpt.set_rng_state(saved["rng"])
        shape = (int(saved.get("world_size", env.world_size)), int(saved.get("batch_size", cfg.batch_size)))
        if shape != (env.world_size, cfg.batch_size):
            log.warning(
                "resuming a run of %d process(es) x batch %d with %d x %d: the data order differs from an "
                "uninterrupted run",
                *shape,
                env.world_size,
                cfg.batch_size,
            )
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            resume_dir,
            state.step,
            state.epoch,
            state.position,
        )
    return state
