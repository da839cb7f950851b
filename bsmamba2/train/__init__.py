"""Training: config (YAML + overrides), the Eq. 8 loss, EMA, checkpoints and the DDP training loop.

    from bsmamba2.train import load_config, train
    result = train(load_config("configs/tiny.yaml", ["data.root=/data/musdb18hq", "max_steps=100"]))

Modules: ``config`` (TrainConfig and its sections), ``loss`` (OFFICIAL_SPEC §5), ``ema``, ``ckpt`` (checkpoint
folders, resume), ``build`` (device, data, model, optimizer, resume), ``step`` (one optimizer step, the LR
schedule), ``validate``, ``logs`` (log.txt, TensorBoard), ``checkpointer``, ``loop`` (the loop, run-folder
layout in its docstring), ``cli`` (``bsmamba2 train``).
"""

from bsmamba2.train.config import TrainConfig, load_config
from bsmamba2.train.loop import TrainResult, train
from bsmamba2.train.loss import separation_loss

__all__ = ["TrainConfig", "TrainResult", "load_config", "separation_loss", "train"]
