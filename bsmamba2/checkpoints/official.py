"""Official BSMamba2 checkpoints (PyTorch Lightning ``.ckpt``) and MSST ``bs_mamba2`` checkpoints → our names.

Two formats: :data:`TORCH_CHECKPOINT` (a ``torch.save`` archive, ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``)
and :data:`SAFETENSORS_STATE_DICT` (an official-layout state dict saved as safetensors, without our config).

What is read (OFFICIAL_SPEC §2):

- Lightning: ``ckpt["state_dict"]`` holds the network under the ``model.`` prefix, next to the window buffers
  ``featurizer.window``, ``inverse_featurizer.window`` and ``multi_featurizer.{0..4}.window`` (ignored).
  ``ckpt["hyper_parameters"]`` is an OmegaConf object: read as inert data, used only to cross-check and for
  what the weights cannot tell (``official_config``). The EMA copy, if any, is
  ``ckpt["optimizer_states"][0]["ema"]``: one tensor per parameter, in ``parameters()`` order.
- MSST: the same module tree as a plain state dict (no prefix), possibly under ``"state_dict"`` or ``"model"``.

Every official key is then checked by name and shape against ``official_layout``. Nothing pickled is ever
executed: archives are read with ``torch_archive``, whose unpickler runs no pickled code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bsmamba2.checkpoints._text import head
from bsmamba2.checkpoints.base import Format, Loaded
from bsmamba2.checkpoints.inert import Inert, to_plain
from bsmamba2.checkpoints.lazy_tensor import LazyTensor
from bsmamba2.checkpoints.official_config import infer_config
from bsmamba2.checkpoints.official_layout import (
    check_family,
    check_layout,
    model_part,
    official_state_shapes,
    to_ours,
)
from bsmamba2.checkpoints.ours import read_safetensors
from bsmamba2.checkpoints.torch_archive import open_torch_archive
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError

log = logging.getLogger(__name__)


def load_torch_checkpoint(path: Path, *, ema: bool = False, stems: Sequence[str] | None = None) -> Loaded:
    """An official Lightning or MSST ``torch.save`` checkpoint in our names (float32, CPU).

    ``ema`` takes the EMA weights (error if the file has none); ``stems`` names the mask estimators' outputs.
    Raises CheckpointError (one line) for anything that is not a BSMamba2 checkpoint.
    """
    with open_torch_archive(path) as archive:  # refuses legacy / unknown formats with one line
        obj = archive.load()
        state, kind, hparams, ema_list = _unpack(obj, str(path))
        # Inside the ``with``: tensors are read from the archive as they are materialised.
        return _convert(
            state, source=str(path), kind=kind, stems=stems, hparams=hparams, ema_list=ema_list, want_ema=ema
        )


def load_safetensors_state_dict(
    path: Path, *, ema: bool = False, stems: Sequence[str] | None = None
) -> Loaded:
    """An official-layout state dict saved as safetensors (e.g. an MSST checkpoint) in our names."""
    if ema:
        raise CheckpointError(f"{path}: a safetensors state dict has no EMA weights (drop --ema)")
    _, tensors = read_safetensors(path)
    return _convert(tensors, source=str(path), kind="safetensors state dict", stems=stems)


def from_state_dict(
    tensors: Mapping[str, Tensor],
    source: str = "state dict",
    stems: Sequence[str] | None = None,
    hparams: Any = None,
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(our config, state dict in our names) from an in-memory official / MSST state dict (any prefix)."""
    c = _convert(tensors, source=source, kind="state dict", stems=stems, hparams=hparams)
    return c.cfg, c.state


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (Tensor, LazyTensor))


def _unpack(obj: Any, source: str) -> tuple[Mapping[Any, Any], str, Any, Any]:
    """(state dict, kind, hyper-parameters as plain data, EMA list or None) of an unpickled checkpoint."""
    if isinstance(obj, Inert):
        raise CheckpointError(
            f"{source}: holds a pickled {type(obj).qualname()} object, not a state dict "
            "(save model.state_dict() instead)"
        )
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: not a model checkpoint (it holds a {type(obj).__name__})")
    hparams = to_plain(obj["hyper_parameters"]) if "hyper_parameters" in obj else None
    ema_list = None
    opt_states = obj.get("optimizer_states")
    if isinstance(opt_states, (list, tuple)) and opt_states and isinstance(opt_states[0], dict):
        ema_list = opt_states[0].get("ema")
    if isinstance(obj.get("state_dict"), dict):
        lightning = (
            "pytorch-lightning_version" in obj or "optimizer_states" in obj or "hyper_parameters" in obj
        )
        return obj["state_dict"], ("Lightning checkpoint" if lightning else "state dict"), hparams, ema_list
    for key in ("model", "model_state_dict", "state"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(_is_tensor(v) for v in inner.values()):
            return inner, "state dict", hparams, ema_list
    return obj, "state dict", hparams, ema_list


def _convert(
    raw: Mapping[Any, Any],
    source: str,
    kind: str,
    stems: Sequence[str] | None = None,
    hparams: Any = None,
    ema_list: Any = None,
    want_ema: bool = False,
) -> Loaded:
    state, prefix, ignored = model_part(raw, source)
    check_family(list(state), source)
    shapes = {k: tuple(v.shape) for k, v in state.items() if _is_tensor(v)}
    not_tensors = [k for k, v in state.items() if not _is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{source}: {len(not_tensors)} entries are not tensors ({head(not_tensors)})")
    cfg = infer_config(shapes, hparams=hparams, stems=stems, source=source)
    expected = official_state_shapes(cfg)
    check_layout(shapes, expected, source)
    has_ema = ema_list is not None
    weights = "raw"
    if want_ema:
        state = _ema_state(state, ema_list, source)
        weights = "ema"
    elif has_ema:
        log.info(
            "%s: also holds EMA weights; --ema (or ema=True) uses them instead of the saved ones", source
        )
    out: dict[str, Tensor] = {}
    for key in expected:  # official order
        t = state[key]
        if not t.dtype.is_floating_point:
            raise CheckpointError(
                f"{source}: {prefix}{key} holds {t.dtype} values, not floating-point weights"
            )
        value = t.materialize() if isinstance(t, LazyTensor) else t.detach()
        out[key] = to_ours(key, value.to(device="cpu", dtype=torch.float32))
    if ignored:
        log.debug("%s: ignored %d non-model entries (%s)", source, len(ignored), head(ignored))
    return Loaded(cfg, out, kind, weights, prefix, ignored, has_ema)


def _ema_state(state: dict[str, Any], ema_list: Any, source: str) -> dict[str, Any]:
    """The EMA copy under the parameter names: ``optimizer_states[0]["ema"]`` follows ``parameters()``
    order, which is the model's state-dict order (it has no buffers)."""
    if ema_list is None:
        raise CheckpointError(
            f"{source}: has no EMA weights (no optimizer_states[0]['ema']); leave out --ema to use its weights"
        )
    if not isinstance(ema_list, (list, tuple)):
        raise CheckpointError(
            f"{source}: optimizer_states[0]['ema'] is a {type(ema_list).__name__}, not a list"
        )
    names = list(state)
    if len(ema_list) != len(names):
        raise CheckpointError(
            f"{source}: the EMA list has {len(ema_list)} tensors but the model has {len(names)} parameters"
        )
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(zip(names, ema_list)):
        if not _is_tensor(value):
            raise CheckpointError(f"{source}: EMA entry {i} ({name}) is not a tensor")
        if tuple(value.shape) != tuple(state[name].shape):
            raise CheckpointError(
                f"{source}: EMA entry {i} has shape {tuple(value.shape)} but {name} has {tuple(state[name].shape)}"
            )
        out[name] = value
    return out


TORCH_CHECKPOINT = Format(
    name="PyTorch checkpoint (official Lightning / MSST)",
    suffixes=(".ckpt", ".pt", ".pth", ".bin"),
    recognise=lambda path, magic: magic in ("torch-zip", "torch-legacy"),  # legacy: refused with its reason
    load=load_torch_checkpoint,
)

# After our own format in the registry: a safetensors file that is not ours is read as a state dict.
SAFETENSORS_STATE_DICT = Format(
    name="safetensors state dict (official layout, e.g. MSST)",
    suffixes=(),
    recognise=lambda path, magic: magic == "safetensors",
    load=load_safetensors_state_dict,
)
