"""Our model file: one safetensors file whose metadata carries the JSON config (``"config"``).

Nothing is unpickled: safetensors holds raw tensors and a JSON header. ``save_model`` writes it atomically;
:data:`FORMAT` recognises it (a safetensors header with a ``config`` entry) and loads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from bsmamba2.atomic import atomic_write
from bsmamba2.checkpoints.base import Format, Loaded
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError
from bsmamba2.model.separator_net import BandSplitSeparator

FORMAT_NAME = "bsmamba2"


def save_model(
    model: BandSplitSeparator,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
    *,
    durable: bool = False,
) -> Path:
    """Write the weights (optionally cast to ``dtype``, e.g. bfloat16 for a small shipped model) and the
    config to one safetensors file, atomically (``atomic_write``; ``durable``: fsync file and folder)."""
    p = Path(path)
    state = {
        k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
        .contiguous()
        .cpu()
        for k, v in model.state_dict().items()
    }
    meta = {"format": FORMAT_NAME, "config": model.cfg.to_json(), **(metadata or {})}
    data = save(state, metadata=meta)
    with atomic_write(p, durable=durable) as tmp:
        write_bytes(tmp, data)
    return p


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` with Python's own file I/O. Not safetensors' ``save_file``: it reports a full disk as a
    ``SafetensorError`` without the OS error number, where callers need an ``OSError`` to name the cause."""
    with open(path, "wb") as f:
        f.write(data)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a safetensors file; CheckpointError if it is not one."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return meta, tensors


def read_config(path: str | os.PathLike[str]) -> ModelConfig | None:
    """The config of one of our model files from its header alone (no tensor is read); None for any other
    file, or one whose header cannot be read or parsed (the full load then names the problem)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get("config")
        return None if text is None else ModelConfig.from_json(text)
    except (SafetensorError, OSError, ValueError, TypeError):  # JSONDecodeError is a ValueError
        return None


def _recognise(path: Path, magic: str) -> bool:
    """A safetensors file whose header metadata has our config (only the header is read)."""
    if magic != "safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return "config" in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False  # an unreadable one falls to the next format, whose loader names the problem


def _load(path: Path, *, ema: bool = False, stems: Sequence[str] | None = None) -> Loaded:
    # ``ema`` and ``stems`` do not apply: the file holds one set of weights and names its stems.
    meta, tensors = read_safetensors(path)
    try:
        cfg = ModelConfig.from_json(meta["config"])
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid model config in file ({e})") from None
    return Loaded(cfg, tensors, kind="bsmamba2 model", weights=meta.get("weights", "raw"))


FORMAT = Format(
    name="bsmamba2 model (.safetensors)",
    suffixes=(".safetensors",),
    recognise=_recognise,
    load=_load,
    foreign=False,
)
