"""Writing a training checkpoint: the main process writes the step folder and moves the pointers
(``bsmamba2.train.ckpt`` does the files); every process waits, so none races ahead to the next step, and
hears whether it failed (a full disk), so all stop together instead of hanging at the next collective."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.distributed as dist

from bsmamba2.device import DistEnv
from bsmamba2.errors import UserError
from bsmamba2.train import ckpt
from bsmamba2.train.build import TrainState
from bsmamba2.train.config import TrainConfig
from bsmamba2.train.step import Nets

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves ``nets`` and the run's state under ``ckpt_root`` (``RUN_DIR/checkpoints``)."""

    def __init__(self, ckpt_root: Path, cfg: TrainConfig, env: DistEnv, nets: Nets) -> None:
        self.ckpt_root, self.cfg, self.env, self.nets = ckpt_root, cfg, env, nets

    def save(self, state: TrainState, metrics: dict[str, float]) -> Path | None:
        """Write ``step_XXXXXX`` for ``state.step`` (``metrics``: of a validation at this step, else {}),
        point ``last`` (and ``best`` when this step is the best) at it and rotate old ones out.

        Returns the folder on the main process, None elsewhere.
        """
        path, failure = None, None
        if self.env.is_main:
            try:
                path = self._write(state, metrics)
            except UserError as e:  # a full disk: every process stops with the same one-line error
                if not self.env.launched:
                    raise
                failure = str(e)
        if self.env.launched:  # also the barrier: no process races ahead to the next step
            news = [failure]
            dist.broadcast_object_list(news, src=0)
            if news[0] is not None:
                raise UserError(news[0])
        return path

    def _write(self, state: TrainState, metrics: dict[str, float]) -> Path:
        ema = self.nets.ema
        validated = "ema.safetensors" if ema is not None and self.cfg.valid.use_ema else "model.safetensors"
        meta = {
            "step": state.step,
            "metrics": metrics,
            "validated": validated,
            "best": state.best,
            "best_step": state.best_step,
        }
        path = ckpt.save_checkpoint(
            self.ckpt_root,
            state.step,
            self.nets.model,
            ema.module if ema else None,
            self.train_state(state),
            meta,
        )
        if state.best_step == state.step:
            ckpt.point(self.ckpt_root, "best", path.name)
        ckpt.rotate(self.ckpt_root, self.cfg.keep_last)
        log.info("saved %s", path)
        return path

    def train_state(self, state: TrainState) -> dict[str, Any]:
        """``state.pt``'s content: everything but the weights that resuming needs (see ``build.restore``)."""
        return {
            "format": ckpt.STATE_FORMAT,
            "step": state.step,
            "epoch": state.epoch,
            "position": state.position,
            "world_size": self.env.world_size,
            "batch_size": self.cfg.batch_size,
            "bad_streak": state.bad_streak,
            "best": state.best,
            "best_step": state.best_step,
            "optimizer": self.nets.optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "config": self.cfg.to_dict(),
        }
