"""The training loop: one explicit function, top to bottom, single-process or DDP.

    bsmamba2 train configs/tiny.yaml data.root=/data/musdb18hq max_steps=1000
    torchrun --nproc_per_node=2 -m bsmamba2 train configs/bsmamba2_paper.yaml data.root=/data/musdb18hq

What one optimizer step does (OFFICIAL_SPEC §5, §6; paper Table I):
  ``grad_accum`` micro-batches of ``batch_size`` random-mix clips per process → forward under bf16 autocast
  (CUDA; fp32 on CPU) → Eq. 8 loss in fp32 → backward (DDP gradient sync only on the last micro-batch,
  ``no_sync`` before) → clip the global grad norm to 3 → AdamW (lr 5e-4, weight decay 0.01) → EMA (0.999).
  A non-finite loss or gradient norm on any process skips the step on all of them (grads zeroed, warning);
  ``max_bad_steps`` in a row stop the run with a one-line error. A skipped step still counts as a step.

Every ``valid.every`` steps the valid tracks are separated whole (``apply_model``, 8 s chunks, no overlap,
as the paper's evaluation) and uSDR (mean over tracks) and cSDR (median) are logged; tracks are shared
among processes. A checkpoint is written every ``ckpt_every`` steps, after every validation and when the
run ends (``max_steps`` reached or the ``max_minutes`` budget spent), so a long run can be split into short
resumable calls: ``bsmamba2 train --resume RUN_DIR max_minutes=9``.

Run folder::

    RUN_DIR/
      config.yaml               the resolved config (every default written out); resume reads it
      log.txt                   the rank-0 log
      tb/                       TensorBoard: train/{loss,loss_time,loss_stft,lr,grad_norm,steps_per_s},
                                valid/{usdr,csdr}[/STEM], valid audio excerpts
      checkpoints/
        step_XXXXXX/            model.safetensors, ema.safetensors, state.pt, meta.json (see train.ckpt)
        last -> step_XXXXXX     the newest checkpoint
        best -> step_XXXXXX     the best validation score (``valid.best_metric``), kept by rotation

Resuming restores weights, EMA, optimizer, step, data epoch and position and RNG states; the learning rate
is a pure function of the step, so there is no scheduler state. The data are the same whatever the
number of DataLoader workers because a training item depends only on (seed, epoch, index).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler, Sampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bsmamba2.apply import apply_model
from bsmamba2.data.musdb import TrackInfo, find_tracks, load_track
from bsmamba2.data.sampler import BatchLoader, MixDataset, SamplerConfig
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.model.mixers.ssd import resolve_backend
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.train import ckpt
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.ema import EMA
from bsmamba2.train.loss import separation_loss

log = logging.getLogger(__name__)


# ---- distributed setup ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run. ``enabled`` when launched by torchrun (RANK/WORLD_SIZE set)."""

    enabled: bool
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes (NCCL on GPU, gloo on CPU), or run single-process."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"device={device} but CUDA is not available")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        dev = torch.device(device if device not in ("auto", "cuda") else ("cuda" if use_cuda else "cpu"))
        return DistInfo(False, 0, 0, 1, dev)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(True, dist.get_rank(), local_rank, dist.get_world_size(), dev)


# ---- learning rate ----------------------------------------------------------------------------------------
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


# ---- data -------------------------------------------------------------------------------------------------
def sampler_config(cfg: TrainConfig) -> SamplerConfig:
    """The training sampler's config: the data section plus stems and sample rate from the model."""
    d = cfg.data
    return SamplerConfig(
        segment_seconds=d.segment_seconds,
        targets=cfg.model.stems,
        sample_rate=cfg.model.sample_rate,
        gain_range=d.gain_range,
        p_silent=d.p_silent,
        p_channel_swap=d.p_channel_swap,
        p_polarity_flip=d.p_polarity_flip,
        activity_threshold=d.activity_threshold,
        activity_stems=d.activity_stems,
        stems=d.stems,
        items_per_epoch=d.items_per_epoch,
    )


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


def to_model_channels(x: Tensor, channels: int) -> Tensor:
    """(..., 2, N) stereo -> (..., channels, N): a mono model gets the channel mean."""
    return x.mean(dim=-2, keepdim=True) if channels == 1 and x.shape[-2] != 1 else x


# ---- validation -------------------------------------------------------------------------------------------
@dataclass
class Validation:
    metrics: dict[str, float]  # usdr, csdr (averaged over stems) and usdr/STEM, csdr/STEM
    examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    # (track name, mixture (C, N), estimate of the first stem (C, N), its reference (C, N)); rank 0 only


@torch.no_grad()
def validate(
    model: BandSplitSeparator, tracks: list[TrackInfo], cfg: TrainConfig, d: DistInfo, amp: torch.dtype | None
) -> Validation:
    """Separate whole tracks (OFFICIAL_SPEC §7) and score them; the tracks are shared among processes.

    uSDR is averaged over tracks, cSDR is their median (the paper's aggregation); the headline ``usdr`` /
    ``csdr`` average those over stems.
    """
    from bsmamba2.evaluate.metrics import csdr, usdr  # museval-style cSDR is only needed here

    mc, vc = cfg.model, cfg.valid
    segment = int(round(vc.segment_seconds * mc.sample_rate))
    was_training = model.training
    model.eval()
    rows: list[dict[str, tuple[float, float]]] = []
    out = Validation({})
    for i in range(d.rank, len(tracks), d.world):
        mix_np, refs = load_track(tracks[i], stems=mc.stems, sample_rate=mc.sample_rate)
        mix = to_model_channels(torch.from_numpy(mix_np), mc.audio_channels).to(d.device)  # (C, N)
        est = apply_model(
            model, mix, segment=segment, overlap=vc.overlap, batch_size=vc.batch_size, dtype=amp
        ).cpu()  # (S, C, N)
        row = {}
        for k, stem in enumerate(mc.stems):
            ref = to_model_channels(torch.from_numpy(refs[stem]), mc.audio_channels).numpy()
            row[stem] = (usdr(ref, est[k].numpy()), csdr(ref, est[k].numpy()))
            if k == 0 and d.master and len(out.examples) < vc.audio_examples:
                out.examples.append((tracks[i].name, mix.cpu().numpy(), est[0].numpy(), ref))
        rows.append(row)
    model.train(was_training)
    if d.enabled:
        gathered: list[Any] = [None] * d.world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    if not rows:
        return out
    for stem in mc.stems:
        out.metrics[f"usdr/{stem}"] = float(np.mean([r[stem][0] for r in rows]))
        out.metrics[f"csdr/{stem}"] = float(np.nanmedian([r[stem][1] for r in rows]))
    out.metrics["usdr"] = float(np.mean([out.metrics[f"usdr/{s}"] for s in mc.stems]))
    out.metrics["csdr"] = float(np.mean([out.metrics[f"csdr/{s}"] for s in mc.stems]))
    return out


def _excerpt(x: np.ndarray, seconds: float, sr: int) -> Tensor:
    """(C, N) -> mono (L,) from the middle of the track, clipped to [-1, 1] for TensorBoard."""
    n = min(x.shape[-1], int(seconds * sr))
    start = (x.shape[-1] - n) // 2
    return torch.from_numpy(np.clip(x[:, start : start + n].mean(axis=0), -1.0, 1.0))


# ---- the loop ---------------------------------------------------------------------------------------------
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
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, resume, d, t_call)
    finally:
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, resume: str | Path | None, d: DistInfo, t_call: float) -> TrainResult:
    if not cfg.data.root:
        raise UserError("data.root is not set (e.g. data.root=/path/to/musdb18hq)")
    run_dir = Path(cfg.run_dir).expanduser()
    ckpt_root = run_dir / "checkpoints"
    resume_dir = ckpt.resolve_resume(resume) if resume is not None else None
    if resume_dir is None and ckpt.list_checkpoints(ckpt_root):
        raise UserError(
            f"{run_dir} already holds checkpoints: continue with --resume {run_dir}, or pick another run_dir"
        )
    pkg_log = logging.getLogger("bsmamba2")
    old_level, file_handler, tb = pkg_log.level, None, None
    if d.master:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".config.yaml.{os.getpid()}"
        tmp.write_text(cfg.to_yaml())
        os.replace(tmp, run_dir / "config.yaml")
        file_handler = logging.FileHandler(run_dir / "log.txt")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg_log.addHandler(file_handler)
        if pkg_log.getEffectiveLevel() > logging.INFO:
            pkg_log.setLevel(logging.INFO)
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: the [train] extra

        # On resume, drop events that a killed run logged after its last checkpoint.
        purge = json.loads((resume_dir / "meta.json").read_text())["step"] if resume_dir is not None else None
        tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
    try:
        with logging_redirect_tqdm():
            return _loop(cfg, d, run_dir, ckpt_root, resume_dir, tb, t_call)
    finally:
        if tb is not None:
            tb.close()
        if file_handler is not None:
            pkg_log.removeHandler(file_handler)
            file_handler.close()
        pkg_log.setLevel(old_level)


def _loop(
    cfg: TrainConfig,
    d: DistInfo,
    run_dir: Path,
    ckpt_root: Path,
    resume_dir: Path | None,
    tb: Any,
    t_call: float,
) -> TrainResult:
    master, device, mc = d.master, d.device, cfg.model
    cuda = device.type == "cuda"
    amp = torch.bfloat16 if cuda and cfg.precision == "bf16" else None  # Table I: bf16; CPU runs fp32
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if amp is not None
        else contextlib.nullcontext()
    )
    torch.manual_seed(cfg.seed)  # the same initial weights on every process (DDP also broadcasts rank 0's)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    # -- data: DistributedSampler gives each process its own indices; an item is a pure function of
    #    (seed, epoch, index), so the clips are random already and need no shuffling
    dataset = MixDataset(cfg.data.root, subset=cfg.data.train_subset, cfg=sampler_config(cfg), seed=cfg.seed)
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=d.world, rank=d.rank, shuffle=False, drop_last=True
    )
    per_epoch = len(sampler) // cfg.batch_size  # micro-batches per process and epoch
    if per_epoch == 0:
        raise UserError(
            f"data.items_per_epoch={cfg.data.items_per_epoch} is too small for batch_size={cfg.batch_size} "
            f"on {d.world} process(es)"
        )

    valid_tracks: list[TrackInfo] = []
    if cfg.valid.every:  # find the valid tracks now rather than fail at the first validation
        valid_tracks = find_tracks(cfg.data.root, cfg.valid.subset, stems=mc.stems)
        valid_tracks = valid_tracks[: cfg.valid.max_tracks or None]

    # -- model, EMA, optimizer
    if mc.mixer == "mamba2":
        try:
            resolve_backend(cfg.backend, device)
        except ValueError as e:
            raise UserError(f"backend: {e}") from None
    model = build_model(mc, backend=cfg.backend).to(device)
    model.recompute = cfg.recompute
    # the compiled glue needs torch.compile's GPU code generator (Triton) on CUDA
    if mc.mixer == "mamba2" and (
        cfg.fused == "on" or (cfg.fused == "auto" and cuda and importlib.util.find_spec("triton") is not None)
    ):
        model.set_fused(True)
    ema = EMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=cuda or None
    )
    step, epoch, position, bad_streak = 0, 0, 0, 0
    best: float | None = None
    best_step = -1
    if resume_dir is not None:
        state = ckpt.load_checkpoint(resume_dir, model, ema.module if ema else None)
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        bad_streak = int(state["bad_streak"])
        best, best_step = state["best"], int(state["best_step"])
        if master:
            ckpt.set_rng_state(state["rng"])
        saved_shape = (int(state.get("world_size", d.world)), int(state.get("batch_size", cfg.batch_size)))
        if saved_shape != (d.world, cfg.batch_size) and master:
            log.warning(
                "resuming a run of %d process(es) x batch %d with %d x %d: the data order differs from an "
                "uninterrupted run",
                *saved_shape,
                d.world,
                cfg.batch_size,
            )
        if master:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, step, epoch, position)
    n_params = sum(p.numel() for p in model.parameters())
    if master:
        log.info(
            "%s, %.2fM parameters, %s, %d process(es) x batch %d x accumulation %d = %d clips per step",
            mc.mixer,
            n_params / 1e6,
            device,
            d.world,
            cfg.batch_size,
            cfg.grad_accum,
            d.world * cfg.batch_size * cfg.grad_accum,
        )

    train_model: torch.nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)  # type: ignore[assignment]
    if d.enabled:
        train_model = DDP(train_model, device_ids=[d.local_rank] if cuda else None)
    batches = micro_batches(dataset, sampler, cfg, epoch, position, pin=cuda)

    def checkpoint(metrics: dict[str, float]) -> Path | None:
        """Rank 0 writes step folder + pointers; every process waits so none races ahead to the next one."""
        path = None
        if master:
            train_state = {
                "format": ckpt.STATE_FORMAT,
                "step": step,
                "epoch": epoch,
                "position": position,
                "world_size": d.world,
                "batch_size": cfg.batch_size,
                "bad_streak": bad_streak,
                "best": best,
                "best_step": best_step,
                "optimizer": optimizer.state_dict(),
                "rng": ckpt.rng_state(),
                "config": cfg.to_dict(),
            }
            validated = "ema.safetensors" if ema is not None and cfg.valid.use_ema else "model.safetensors"
            meta = {
                "step": step,
                "metrics": metrics,
                "validated": validated,
                "best": best,
                "best_step": best_step,
            }
            path = ckpt.save_checkpoint(
                ckpt_root, step, model, ema.module if ema else None, train_state, meta
            )
            if best_step == step:
                ckpt.point(ckpt_root, "best", path.name)
            ckpt.rotate(ckpt_root, cfg.keep_last)
            log.info("saved %s", path)
        if d.enabled:
            dist.barrier()
        return path

    # -- the loop
    deadline = t_call + 60.0 * cfg.max_minutes if cfg.max_minutes else math.inf
    last_path: Path | None = None
    metrics: dict[str, float] = {}
    logged_refs: set[str] = set()
    window = dict.fromkeys(("loss", "time", "stft", "gnorm", "n", "skipped"), 0.0)  # sums since the last log
    t_window = time.monotonic()
    bar = tqdm(
        total=cfg.max_steps or None,
        initial=step,
        unit="step",
        desc="train",
        dynamic_ncols=True,
        disable=not (master and cfg.progress),
    )
    model.train()
    if cfg.max_steps and step >= cfg.max_steps and master:
        log.info("already at step %d >= max_steps=%d: nothing to do", step, cfg.max_steps)
    while not cfg.max_steps or step < cfg.max_steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # forward/backward over grad_accum micro-batches; DDP syncs gradients only on the last one
        sums = torch.zeros(3, device=device)  # loss, time term, STFT term
        for micro in range(cfg.grad_accum):
            epoch, position, mix, tgt = next(batches)
            mix = to_model_channels(mix, mc.audio_channels).to(device, non_blocking=True)  # (B, C, N)
            tgt = to_model_channels(tgt, mc.audio_channels).to(device, non_blocking=True)  # (B, S, C, N)
            last_micro = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (last_micro or not d.enabled) else train_model.no_sync()  # type: ignore[operator]
            with sync:
                with autocast:
                    est = train_model(mix)  # (B, S, C, N)
                terms = separation_loss(est, tgt, cfg.loss, mc.n_fft, mc.hop_length)  # fp32 (Eq. 8)
                (terms.total / cfg.grad_accum).backward()
            sums += torch.stack([t.detach() for t in terms]) / cfg.grad_accum
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)

        # one all-reduce gives every process the mean losses, and the same skip / stop decisions
        out_of_time = master and time.monotonic() > deadline
        flags = torch.cat([sums, (~torch.isfinite(sums[:1] + gnorm)).float(), sums.new_tensor([out_of_time])])
        if d.enabled:
            dist.all_reduce(flags)
            flags[:3] /= d.world
        loss, loss_time, loss_stft, bad, stop = flags.tolist()
        if bad:
            optimizer.zero_grad(set_to_none=True)
            bad_streak += 1
            window["skipped"] += 1
            if master:
                log.warning("step %d: non-finite loss or gradient (%s); step skipped", step, loss)
            if bad_streak >= cfg.max_bad_steps:
                raise UserError(
                    f"{bad_streak} consecutive non-finite losses (last at step {step}): training diverged; "
                    "try a lower optim.lr or precision=fp32"
                )
        else:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            bad_streak = 0
            window["loss"] += loss
            window["time"] += loss_time
            window["stft"] += loss_stft
            window["gnorm"] += float(gnorm)
            window["n"] += 1
        step += 1
        bar.update(1)

        # logging (rank 0)
        if master and (step % cfg.log_every == 0 or step == cfg.max_steps):
            n = max(1, int(window["n"]))
            rate = (window["n"] + window["skipped"]) / max(1e-9, time.monotonic() - t_window)
            scalars = {
                "train/loss": window["loss"] / n,
                "train/loss_time": window["time"] / n,
                "train/loss_stft": window["stft"] / n,
                "train/grad_norm": window["gnorm"] / n,
                "train/lr": lr,
                "train/steps_per_s": rate,
                "train/skipped": window["skipped"],
            }
            for k, v in scalars.items():
                tb.add_scalar(k, v, step)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{lr:.2e}")
            mem = f"  {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else ""
            log.info(
                "step %d  loss %.4f (time %.4f, stft %.4f)  grad norm %.3f  lr %.2e  %.2f steps/s%s",
                step,
                scalars["train/loss"],
                scalars["train/loss_time"],
                scalars["train/loss_stft"],
                scalars["train/grad_norm"],
                lr,
                rate,
                mem,
            )
            window = dict.fromkeys(window, 0.0)
            t_window = time.monotonic()

        # validation, checkpoints, stopping
        finished = bool(cfg.max_steps) and step >= cfg.max_steps
        validate_now = cfg.valid.every > 0 and (step % cfg.valid.every == 0 or finished) and not stop
        if validate_now:
            eval_model = ema.module if (ema is not None and cfg.valid.use_ema) else model
            result = validate(eval_model, valid_tracks, cfg, d, amp)
            metrics = result.metrics
            if master and metrics:
                score = metrics[cfg.valid.best_metric]
                if math.isfinite(score) and (best is None or score > best):
                    best, best_step = score, step
                for k, v in metrics.items():
                    tb.add_scalar(f"valid/{k}", v, step)
                for name, mix_np, est_np, ref_np in result.examples:
                    sr = mc.sample_rate
                    tb.add_audio(
                        f"valid/{name}/{mc.stems[0]}", _excerpt(est_np, cfg.valid.audio_seconds, sr), step, sr
                    )
                    if name not in logged_refs:  # the inputs do not change: log them once per call
                        logged_refs.add(name)
                        tb.add_audio(
                            f"valid/{name}/mixture", _excerpt(mix_np, cfg.valid.audio_seconds, sr), step, sr
                        )
                        tb.add_audio(
                            f"valid/{name}/reference", _excerpt(ref_np, cfg.valid.audio_seconds, sr), step, sr
                        )
                log.info(
                    "step %d  valid uSDR %.3f dB  cSDR %.3f dB  (best %s %.3f at step %d)",
                    step,
                    metrics["usdr"],
                    metrics["csdr"],
                    cfg.valid.best_metric,
                    best,
                    best_step,
                )
        if validate_now or finished or stop or step % cfg.ckpt_every == 0:
            last_path = checkpoint(metrics if validate_now else {})
        if stop:
            if master:
                log.info(
                    "time budget of %.1f min spent at step %d: stopped after saving", cfg.max_minutes, step
                )
            break
    bar.close()
    batches.close()  # shuts DataLoader workers down now rather than at garbage collection
    return TrainResult(step, run_dir, last_path, best, model, ema.module if ema else None, metrics)
