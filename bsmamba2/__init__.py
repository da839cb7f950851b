"""bsmamba2: BSMamba2 music source separation (band-split dual-path bidirectional Mamba2), pure PyTorch.

from bsmamba2 import Separator
stems = Separator.from_pretrained().separate(waveform, sample_rate)
"""

from bsmamba2.api import Separator
from bsmamba2.config import ModelConfig
from bsmamba2.model.checkpoint import build_model, load_model, save_model

__version__ = "0.1.0"
__all__ = ["ModelConfig", "Separator", "__version__", "build_model", "load_model", "save_model"]
