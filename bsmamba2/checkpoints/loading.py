"""Load any supported checkpoint file: find its format in the registry, load it, fill a model strictly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from bsmamba2.checkpoints.base import Loaded, layout_problems
from bsmamba2.checkpoints.registry import detect
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError
from bsmamba2.model import build_model
from bsmamba2.model.separator_net import BandSplitSeparator


def load_state(path: str | os.PathLike[str], ema: bool = False) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(config, state dict in our parameter names) from any supported checkpoint file.

    ``ema``: an official checkpoint's EMA weights instead of its raw ones (ignored for our own files, which
    hold one set). Raises CheckpointError (one line) for missing files and files no format can read.
    """
    p = _existing_file(path, missing="no such model file", folder="a model file")
    loaded = detect(p).load(p, ema=ema, stems=None)
    return loaded.cfg, loaded.state


def convert_checkpoint(
    path: str | os.PathLike[str], ema: bool = False, stems: Sequence[str] | None = None
) -> Loaded:
    """A foreign (official Lightning / MSST) checkpoint in our config and names, with what kind of file it
    was and what was ignored. ``stems`` names the mask estimators' outputs. Refuses our own files."""
    p = _existing_file(path, missing="no such file", folder="a checkpoint file")
    fmt = detect(p)
    if not fmt.foreign:
        raise CheckpointError(f"{p}: already a bsmamba2 model file; load it directly, no conversion needed")
    return fmt.load(p, ema=ema, stems=stems)


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    backend: str = "auto",
    ema: bool = False,
    fused: bool = False,
) -> BandSplitSeparator:
    """Rebuild a model in eval mode from one file (ours, or an official / MSST checkpoint). Weights become
    float32. ``backend`` is resolved for ``device``; ``fused``: compiled glue around every Mamba2 scan (see
    ``bsmamba2.model.build_model``).

    Raises CheckpointError (one line) for missing files, non-checkpoints and weights that do not fit.
    """
    cfg, state = load_state(path, ema=ema)
    model = build_model(cfg, backend=backend, device=device, fused=fused)
    load_weights(model, state, source=str(path))
    return model.eval()


def load_weights(model: BandSplitSeparator, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model``, naming missing / unexpected / mis-shaped keys in one line."""
    own = model.state_dict()
    problems = layout_problems(
        {k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in own.items()}
    )
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def _existing_file(path: str | os.PathLike[str], *, missing: str, folder: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: {missing}")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not {folder}")
    return p
