"""Save and load models: one safetensors file whose metadata carries the JSON config.

Loading never unpickles: ``.safetensors`` files are read with safetensors; official Lightning / MSST
checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) go through ``bsmamba2.model.convert``, which uses a
restricted unpickler that runs no pickled code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from bsmamba2.atomic import temp_beside
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError
from bsmamba2.model.separator_net import BandSplitSeparator

FORMAT = "bsmamba2"
FOREIGN_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def build_model(cfg: ModelConfig, backend: str = "auto") -> BandSplitSeparator:
    """A freshly initialised model for ``cfg``."""
    return BandSplitSeparator(cfg, backend=backend)


def save_model(
    model: BandSplitSeparator,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the weights (optionally cast to ``dtype``, e.g. bfloat16 for a small shipped model) and the
    config to one safetensors file, atomically (temp file + rename)."""
    p = Path(path)
    state = {
        k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
        .contiguous()
        .cpu()
        for k, v in model.state_dict().items()
    }
    meta = {"format": FORMAT, "config": model.cfg.to_json(), **(metadata or {})}
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_beside(p))
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return p


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a safetensors file; CheckpointError if it is not one."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return meta, tensors


def load_state(path: str | os.PathLike[str], ema: bool = False) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(config, state dict in our parameter names) from any supported checkpoint file."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such model file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a model file")
    if p.suffix.lower() == ".safetensors":
        meta, tensors = read_safetensors(p)
        if "config" in meta:
            try:
                cfg = ModelConfig.from_json(meta["config"])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{p}: invalid model config in file ({e})") from None
            return cfg, tensors
        if ema:
            raise CheckpointError(f"{p}: a safetensors state dict has no EMA weights (drop --ema)")
        from bsmamba2.model import convert  # a plain state dict, e.g. an MSST checkpoint saved as safetensors

        return convert.from_state_dict(tensors, source=str(p))
    from bsmamba2.model import convert

    return convert.load_foreign_checkpoint(p, ema=ema)


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", backend: str = "auto", ema: bool = False
) -> BandSplitSeparator:
    """Rebuild a model from one file (ours, or an official / MSST checkpoint). Weights become float32.

    Raises CheckpointError (one line) for missing files, non-checkpoints and weights that do not fit.
    """
    cfg, state = load_state(path, ema=ema)
    model = build_model(cfg, backend=backend)
    load_weights(model, state, source=str(path))
    return model.to(device).eval()


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


def layout_problems(have: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps tensors of shapes ``have`` from filling slots of shapes ``want`` (empty if nothing):
    missing, unexpected and mis-shaped keys, each kind summarised with its first few names."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k} {have[k]} != {v}" for k, v in want.items() if k in have and have[k] != v]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({_head(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({_head(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches ({_head(wrong)})")
    return problems


def _head(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
