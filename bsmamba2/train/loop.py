"""The training loop: one explicit function, top to bottom, single-process or DDP.

    bsmamba2 train configs/tiny.yaml data.root=/data/musdb18hq max_steps=1000
    torchrun --nproc_per_node=2 -m bsmamba2 train configs/bsmamba2_paper.yaml data.root=/data/musdb18hq

The pieces: ``build`` (device, data, model, EMA, optimizer, resume), ``step`` (one optimizer step over
``grad_accum`` micro-batches: OFFICIAL_SPEC §5, §6), ``validate`` (whole valid tracks through
``bsmamba2.api.Separator``, 8 s chunks without overlap as the paper's evaluation, scored by
``bsmamba2.evaluate.scoring``), ``logs`` (log.txt, TensorBoard, progress bar) and ``checkpointer``.

Every ``valid.every`` steps the valid tracks are separated and uSDR (mean over tracks) and cSDR (median)
are logged; tracks are shared among processes. A checkpoint is written every ``ckpt_every`` steps, after every validation and when the
run ends (``max_steps`` reached or the ``max_minutes`` budget spent), so a long run can be split into short
resumable calls: ``bsmamba2 train --resume RUN_DIR max_minutes=9``.

Run folder::

    RUN_DIR/
      config.yaml               the resolved config (every default written out); resume reads it
      log.txt                   the rank-0 log
      tb/                       TensorBoard (tags in train.logs)
      checkpoints/
        step_XXXXXX/            model.safetensors, ema.safetensors, state.pt, meta.json (see train.ckpt)
        last -> step_XXXXXX     the newest checkpoint
        best -> step_XXXXXX     the best validation score (``valid.best_metric``), kept by rotation

``--resume RUN_DIR`` continues from the newest checkpoint whose files all read back, skipping (with a
warning) a newer one left damaged, e.g. by a full disk or a power cut; leftovers of killed runs (temp
folders, step folders without ``state.pt``) are removed first. Resuming restores weights, EMA, optimizer,
step, data epoch and position and RNG states; the learning rate is a pure function of the step, so there
is no scheduler state. The data are the same whatever the number of DataLoader workers because a training
item depends only on (seed, epoch, index).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.contrib.logging import logging_redirect_tqdm

from bsmamba2.atomic import atomic_write, make_folder, write_failure
from bsmamba2.device import DistEnv, dist_env, join_process_group, leave_process_group
from bsmamba2.errors import UserError
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.train import build, ckpt
from bsmamba2.train.checkpointer import Checkpointer
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.logs import TrainLog, run_logs
from bsmamba2.train.step import Nets, optimizer_step
from bsmamba2.train.validate import validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    last_checkpoint: Path | None
    best: float | None  # best validation score (valid.best_metric), None if never validated
    model: BandSplitSeparator  # raw weights
    ema_model: BandSplitSeparator | None
    metrics: dict[str, float] = field(default_factory=dict)  # of the last validation


def train(cfg: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train as ``cfg`` says, optionally continuing a checkpoint; returns where it stopped.

    Launched by torchrun, every process calls this; it joins the process group and leaves it at the end.
    """
    t_call = time.monotonic()  # the max_minutes budget counts from here, set-up included
    env = dist_env()
    device = build.train_device(cfg.device, env)
    join_process_group(env, device)
    try:
        if not cfg.data.root:
            raise UserError("data.root is not set (e.g. data.root=/path/to/musdb18hq)")
        run_dir = Path(cfg.run_dir).expanduser()
        if env.is_main:  # leftovers of killed or failed runs, before anything looks at the checkpoints
            ckpt.clean_stale(run_dir / "checkpoints")
        if env.launched:
            dist.barrier()
        resume_dir = ckpt.choose_resume(resume, announce=env.is_main) if resume is not None else None
        if resume_dir is None and ckpt.list_checkpoints(run_dir / "checkpoints"):
            raise UserError(
                f"{run_dir} already holds checkpoints: continue with --resume {run_dir}, or pick another run_dir"
            )
        if env.is_main:
            try:
                make_folder(run_dir)
                with atomic_write(run_dir / "config.yaml") as tmp:
                    tmp.write_text(cfg.to_yaml())
            except OSError as e:  # an unwritable run_dir, a full disk: nothing is trained yet
                raise write_failure(run_dir / "config.yaml", e) from None
        with run_logs(run_dir, resume_dir, env.is_main) as tb, logging_redirect_tqdm():
            return _loop(cfg, env, device, run_dir, resume_dir, tb, t_call)
    finally:
        leave_process_group(env)


def _loop(
    cfg: TrainConfig,
    env: DistEnv,
    device: torch.device,
    run_dir: Path,
    resume_dir: Path | None,
    tb: Any,
    t_call: float,
) -> TrainResult:
    # -- build: data, model, EMA, optimizer, then the checkpoint's state on top
    build.seed_everything(cfg.seed)
    dataset, sampler = build.training_data(cfg, env)
    valid_tracks = build.valid_tracks(cfg)
    model = build.make_model(cfg, device)
    ema = build.make_ema(model, cfg)
    optimizer = build.make_optimizer(model, cfg, device)
    state = build.TrainState()
    if resume_dir is not None:
        state = build.restore(resume_dir, model, ema, optimizer, cfg, env)
    build.log_setup(model, cfg, env, device)
    nets = Nets(model, build.wrap_for_training(model, cfg, env, device), ema, optimizer)
    amp = build.train_precision(cfg, device)
    batches = build.micro_batches(
        dataset, sampler, cfg, state.epoch, state.position, pin=device.type == "cuda"
    )
    saver = Checkpointer(run_dir / "checkpoints", cfg, env, nets)
    logs = TrainLog(cfg, tb, env.is_main, device, state.step)

    # -- the loop
    deadline = t_call + 60.0 * cfg.max_minutes if cfg.max_minutes else math.inf
    last_path: Path | None = None
    metrics: dict[str, float] = {}
    model.train()
    if cfg.max_steps and state.step >= cfg.max_steps and env.is_main:
        log.info("already at step %d >= max_steps=%d: nothing to do", state.step, cfg.max_steps)
    while not cfg.max_steps or state.step < cfg.max_steps:
        out = optimizer_step(cfg, env, device, amp, nets, batches, state, deadline)
        state.step += 1
        logs.step(state.step, out)

        # validation, checkpoints, stopping
        finished = bool(cfg.max_steps) and state.step >= cfg.max_steps
        validate_now = (
            cfg.valid.every > 0 and (state.step % cfg.valid.every == 0 or finished) and not out.stop
        )
        if validate_now:
            eval_model = ema.module if (ema is not None and cfg.valid.use_ema) else model
            result = validate(eval_model, valid_tracks, cfg, env, device, amp)
            metrics = result.metrics
            if env.is_main and metrics:
                score = metrics[cfg.valid.best_metric]
                if math.isfinite(score) and (state.best is None or score > state.best):
                    state.best, state.best_step = score, state.step
            logs.validation(state.step, result, state)
        if validate_now or finished or out.stop or state.step % cfg.ckpt_every == 0:
            last_path = saver.save(state, metrics if validate_now else {})
        if out.stop:
            if env.is_main:
                log.info(
                    "time budget of %.1f min spent at step %d: stopped after saving",
                    cfg.max_minutes,
                    state.step,
                )
            break
    logs.close()
    batches.close()  # shuts DataLoader workers down now rather than at garbage collection
    return TrainResult(
        state.step, run_dir, last_path, state.best, model, ema.module if ema else None, metrics
    )
