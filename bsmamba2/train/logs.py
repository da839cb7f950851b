"""What a run reports: ``log.txt`` and TensorBoard (main process only), the progress bar, the log lines.

TensorBoard tags: train/{loss,loss_time,loss_stft,lr,grad_norm,steps_per_s,skipped}, valid/{usdr,csdr}[/STEM]
and valid audio excerpts (valid/TRACK/{STEM,mixture,reference}).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from bsmamba2.train.build import TrainState
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.step import StepOutcome
from bsmamba2.train.validate import Validation

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_logs(run_dir: Path, resume_dir: Path | None, main: bool) -> Iterator[Any]:
    """On the main process: the package's log also goes to ``run_dir/log.txt`` (at INFO at least), and a
    TensorBoard writer on ``run_dir/tb`` is yielded; elsewhere None. Undone on exit."""
    pkg_log = logging.getLogger("bsmamba2")
    old_level = pkg_log.level
    if not main:
        yield None
        return
    file_handler = logging.FileHandler(run_dir / "log.txt")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_log.addHandler(file_handler)
    tb = None
    try:
        if pkg_log.getEffectiveLevel() > logging.INFO:
            pkg_log.setLevel(logging.INFO)
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: the [train] extra

        # On resume, drop events that a killed run logged after its last checkpoint.
        purge = json.loads((resume_dir / "meta.json").read_text())["step"] if resume_dir is not None else None
        tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
        yield tb
    finally:
        if tb is not None:
            tb.close()
        pkg_log.removeHandler(file_handler)
        file_handler.close()
        pkg_log.setLevel(old_level)


class TrainLog:
    """The progress bar, and on the main process the log lines and TensorBoard scalars: training means
    over the steps since the last log line, every ``log_every`` steps, and every validation's results."""

    def __init__(self, cfg: TrainConfig, tb: Any, main: bool, device: torch.device, step: int) -> None:
        self.cfg, self.tb, self.main, self.device = cfg, tb, main, device
        self.bar = tqdm(
            total=cfg.max_steps or None,
            initial=step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=not (main and cfg.progress),
        )
        self.window = self._empty()
        self.t_window = time.monotonic()
        self.logged_refs: set[str] = set()  # tracks whose mixture / reference audio is logged already

    @staticmethod
    def _empty() -> dict[str, float]:
        return dict.fromkeys(
            ("loss", "time", "stft", "gnorm", "n", "skipped"), 0.0
        )  # sums since the last log

    def step(self, step: int, out: StepOutcome) -> None:
        """Account for optimizer step ``step`` (1-based: the number of steps done)."""
        w = self.window
        if out.skipped:
            w["skipped"] += 1
        else:
            w["loss"] += out.loss
            w["time"] += out.loss_time
            w["stft"] += out.loss_stft
            w["gnorm"] += out.grad_norm
            w["n"] += 1
        self.bar.update(1)
        if self.main and (step % self.cfg.log_every == 0 or step == self.cfg.max_steps):
            self._log_window(step, out.lr)

    def _log_window(self, step: int, lr: float) -> None:
        w = self.window
        n = max(1, int(w["n"]))
        rate = (w["n"] + w["skipped"]) / max(1e-9, time.monotonic() - self.t_window)
        scalars = {
            "train/loss": w["loss"] / n,
            "train/loss_time": w["time"] / n,
            "train/loss_stft": w["stft"] / n,
            "train/grad_norm": w["gnorm"] / n,
            "train/lr": lr,
            "train/steps_per_s": rate,
            "train/skipped": w["skipped"],
        }
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        self.bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{lr:.2e}")
        cuda = self.device.type == "cuda"
        mem = f"  {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB" if cuda else ""
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
        self.window = self._empty()
        self.t_window = time.monotonic()

    def validation(self, step: int, result: Validation, state: TrainState) -> None:
        """Log a validation's metrics (scalars and a log line) and audio excerpts (main process only)."""
        if not (self.main and result.metrics):
            return
        cfg, sr = self.cfg, self.cfg.model.sample_rate
        for k, v in result.metrics.items():
            self.tb.add_scalar(f"valid/{k}", v, step)
        seconds = cfg.valid.audio_seconds
        for name, mix, est, ref in result.examples:
            self.tb.add_audio(f"valid/{name}/{cfg.model.stems[0]}", _excerpt(est, seconds, sr), step, sr)
            if name not in self.logged_refs:  # the inputs do not change: log them once per call
                self.logged_refs.add(name)
                self.tb.add_audio(f"valid/{name}/mixture", _excerpt(mix, seconds, sr), step, sr)
                self.tb.add_audio(f"valid/{name}/reference", _excerpt(ref, seconds, sr), step, sr)
        log.info(
            "step %d  valid uSDR %.3f dB  cSDR %.3f dB  (best %s %.3f at step %d)",
            step,
            result.metrics["usdr"],
            result.metrics["csdr"],
            cfg.valid.best_metric,
            state.best,
            state.best_step,
        )

    def close(self) -> None:
        self.bar.close()


def _excerpt(x: np.ndarray, seconds: float, sr: int) -> Tensor:
    """(C, N) -> mono (L,) from the middle of the track, clipped to [-1, 1] for TensorBoard."""
    n = min(x.shape[-1], int(seconds * sr))
    start = (x.shape[-1] - n) // 2
    return torch.from_numpy(np.clip(x[:, start : start + n].mean(axis=0), -1.0, 1.0))
