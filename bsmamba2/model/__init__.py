"""The separation network: band split, dual-path sequence mixers, mask estimation."""

from bsmamba2.config import ModelConfig
from bsmamba2.model.separator_net import BandSplitSeparator


def build_model(cfg: ModelConfig, backend: str = "auto") -> BandSplitSeparator:
    """A freshly initialised model for ``cfg``."""
    return BandSplitSeparator(cfg, backend=backend)


__all__ = ["BandSplitSeparator", "build_model"]
