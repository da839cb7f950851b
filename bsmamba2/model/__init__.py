"""The separation network: band split, dual path of sequence mixers, masks (``separator_net.py``).

``build_model`` is the one way to make one: it picks the SSD backend and the block forms once, at build time.
"""

from __future__ import annotations

import torch

from bsmamba2.config import ModelConfig
from bsmamba2.model.separator_net import BandSplitSeparator


def build_model(
    cfg: ModelConfig,
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    fused: bool = False,
) -> BandSplitSeparator:
    """A freshly initialised model for ``cfg``, on ``device`` (None: left on the current default device).

    ``backend``: the SSD of Mamba2 mixers, one of ``ssd.USER_BACKENDS`` ("auto" = fused Triton on CUDA, else the
    plain-PyTorch reference), resolved once for ``device``; a bad or unavailable one is a one-line
    ``BackendError`` (a UserError). ``fused``: build ``FusedMamba2Block``s (torch.compile'd glue around each
    scan) in place of the eager prenorm blocks: same parameters and function; ignored by mixers without a
    fused form. The weights are drawn from the global torch RNG.
    """
    dev = torch.device(device) if device is not None else None
    model = BandSplitSeparator(cfg, backend=backend, device=dev, fused=fused)
    return model if dev is None else model.to(dev)


__all__ = ["BandSplitSeparator", "build_model"]
