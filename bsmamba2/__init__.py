"""bsmamba2: BSMamba2 music source separation (band-split dual-path bidirectional Mamba2), pure PyTorch.

from bsmamba2 import Separator
stems = Separator.from_pretrained().separate(waveform, sample_rate)

The public names are imported on first use, so ``import bsmamba2`` (and ``bsmamba2 --help``) does not load
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bsmamba2.api import Separator
    from bsmamba2.checkpoints import load_model, save_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model
    from bsmamba2.streaming import StreamingSeparator

__version__ = "0.1.0"
__all__ = [
    "ModelConfig",
    "Separator",
    "StreamingSeparator",
    "__version__",
    "build_model",
    "load_model",
    "save_model",
]

# public name -> the module that defines it
_LAZY = {
    "Separator": "bsmamba2.api",
    "ModelConfig": "bsmamba2.config",
    "build_model": "bsmamba2.model",
    "load_model": "bsmamba2.checkpoints",
    "save_model": "bsmamba2.checkpoints",
    "StreamingSeparator": "bsmamba2.streaming",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bsmamba2' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
