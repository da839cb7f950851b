"""Model files in and out: our format (safetensors + JSON config), the official Lightning / MSST checkpoints,
and a restricted unpickler under them that never runs pickled code.

Every loader goes through the format registry (``registry.FORMATS``): a format recognises its files and loads
one to ``(ModelConfig, state dict in our names)``.

    model = load_model("model.safetensors")          # or an official .ckpt / MSST checkpoint
    save_model(model, "copy.safetensors")
    cfg, state = load_state("official.ckpt", ema=True)
"""

from bsmamba2.checkpoints.base import Format, Loaded
from bsmamba2.checkpoints.loading import (
    convert_checkpoint,
    load_model,
    load_state,
    load_weights,
    model_from_state,
)
from bsmamba2.checkpoints.ours import read_safetensors, save_model
from bsmamba2.checkpoints.registry import FORMATS, detect

__all__ = [
    "FORMATS",
    "Format",
    "Loaded",
    "convert_checkpoint",
    "detect",
    "load_model",
    "load_state",
    "load_weights",
    "model_from_state",
    "read_safetensors",
    "save_model",
]
