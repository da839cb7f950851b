"""One optimizer step (OFFICIAL_SPEC §5, §6; paper Table I) and the learning-rate schedule.

``grad_accum`` micro-batches of ``batch_size`` random-mix clips per process → forward under bf16 autocast
(CUDA; fp32 on CPU) → Eq. 8 loss in fp32 → backward (DDP gradient sync only on the last micro-batch,
``no_sync`` before) → clip the global grad norm to 3 → AdamW → EMA. A non-finite loss or gradient norm on
any process skips the step on all of them (grads zeroed, warning); ``max_bad_steps`` in a row stop the run
with a one-line error. A skipped step still counts as a step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bsmamba2.device import DistEnv
from bsmamba2.errors import UserError
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.train.build import TrainState
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.ema import EMA
from bsmamba2.train.loss import separation_loss

log = logging.getLogger(__name__)


def to_model_channels(x: Tensor, channels: int) -> Tensor:
    """(..., 2, N) stereo -> (..., channels, N): a mono model gets the channel mean."""
    return x.mean(dim=-2, keepdim=True) if channels == 1 and x.shape[-2] != 1 else x


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant (official) or cosine."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    decay_steps = o.decay_steps or max(1, cfg.max_steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / decay_steps)
    min_lr = o.min_lr_ratio * o.lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.lr - min_lr)


@dataclass
class Nets:
    """What a step updates: the raw model (checkpoints, EMA and validation read it), the module the forward
    pass calls (the same model compiled and/or DDP-wrapped), the EMA and the optimizer."""

    model: BandSplitSeparator
    train_model: nn.Module
    ema: EMA[BandSplitSeparator] | None
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class StepOutcome:
    """Losses averaged over micro-batches and processes; ``stop``: the time budget is spent (any process)."""

    lr: float
    loss: float
    loss_time: float
    loss_stft: float
    grad_norm: float
    skipped: bool
    stop: bool


Batches = Iterator[
    tuple[int, int, Tensor, Tensor]
]  # (epoch, position, mixture (B, 2, N), targets (B, S, 2, N))


def optimizer_step(
    cfg: TrainConfig,
    env: DistEnv,
    device: torch.device,
    amp: torch.dtype | None,
    nets: Nets,
    batches: Batches,
    state: TrainState,
    deadline: float,
) -> StepOutcome:
    """Optimizer step ``state.step`` (the counter is the caller's to advance); moves ``state.epoch`` /
    ``position`` past the micro-batches it reads and keeps ``state.bad_streak``."""
    lr = lr_at(state.step, cfg)
    for group in nets.optimizer.param_groups:
        group["lr"] = lr
    sums = _accumulate_gradients(cfg, env, device, amp, nets.train_model, batches, state)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    gnorm = torch.nn.utils.clip_grad_norm_(nets.model.parameters(), clip)

    # one all-reduce gives every process the mean losses, and the same skip / stop decisions
    out_of_time = env.is_main and time.monotonic() > deadline
    flags = torch.cat([sums, (~torch.isfinite(sums[:1] + gnorm)).float(), sums.new_tensor([out_of_time])])
    if env.launched:
        dist.all_reduce(flags)
        flags[:3] /= env.world_size
    loss, loss_time, loss_stft, bad, stop = flags.tolist()
    if bad:
        nets.optimizer.zero_grad(set_to_none=True)
        state.bad_streak += 1
        if env.is_main:
            log.warning("step %d: non-finite loss or gradient (%s); step skipped", state.step, loss)
        if state.bad_streak >= cfg.max_bad_steps:
            raise UserError(
                f"{state.bad_streak} consecutive non-finite losses (last at step {state.step}): training "
                "diverged; try a lower optim.lr or precision=fp32"
            )
    else:
        nets.optimizer.step()
        nets.optimizer.zero_grad(set_to_none=True)
        if nets.ema is not None:
            nets.ema.update(nets.model)
        state.bad_streak = 0
    return StepOutcome(lr, loss, loss_time, loss_stft, float(gnorm), bool(bad), bool(stop))


def _accumulate_gradients(
    cfg: TrainConfig,
    env: DistEnv,
    device: torch.device,
    amp: torch.dtype | None,
    train_model: nn.Module,
    batches: Batches,
    state: TrainState,
) -> Tensor:
    """Forward/backward over ``grad_accum`` micro-batches; returns (3,) mean (loss, time term, STFT term).

    DDP syncs gradients only on the last micro-batch.
    """
    mc = cfg.model
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    sums = torch.zeros(3, device=device)
    for micro in range(cfg.grad_accum):
        state.epoch, state.position, mix, tgt = next(batches)
        mix = to_model_channels(mix, mc.audio_channels).to(device, non_blocking=True)  # (B, C, N)
        tgt = to_model_channels(tgt, mc.audio_channels).to(device, non_blocking=True)  # (B, S, C, N)
        last_micro = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if (last_micro or not env.launched) else train_model.no_sync()  # type: ignore[operator]
        with sync:
            with autocast:
                est = train_model(mix)  # (B, S, C, N)
            terms = separation_loss(est, tgt, cfg.loss, mc.n_fft, mc.hop_length)  # fp32 (Eq. 8)
            (terms.total / cfg.grad_accum).backward()
        sums += torch.stack([t.detach() for t in terms]) / cfg.grad_accum
    return sums
