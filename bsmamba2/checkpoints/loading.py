"""Load any supported checkpoint file: find its format in the registry, load it, fill a model strictly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bsmamba2.checkpoints.base import Loaded, layout_problems
from bsmamba2.checkpoints.registry import detect
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError
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
    return model_from_state(cfg, state, device=device, backend=backend, fused=fused, source=str(path)).eval()


def model_from_state(
    cfg: ModelConfig,
    state: dict[str, Tensor],
    *,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    fused: bool = False,
    source: str = "checkpoint",
) -> BandSplitSeparator:
    """A model for ``cfg`` holding ``state`` (our names), float32 on ``device``, in training mode.

    Built with its random initialisers skipped (``SkipRandomInit``) and given the checkpoint's tensors
    (``load_state_dict(assign=True)``), so no init runs and nothing is copied twice; the global RNG is not
    drawn from. ``state`` is consumed: its tensors may become the model's. Raises CheckpointError for weights
    that do not fit.
    """
    dev = torch.device(device)
    with SkipRandomInit():
        model = BandSplitSeparator(cfg, backend=backend, device=dev, fused=fused)
    own = model.state_dict()
    _check_layout(state, own, source)
    model.load_state_dict(_owned(state, own, dev), strict=True, assign=True)
    return model


class SkipRandomInit(TorchFunctionMode):
    """While a model is built only to be filled from a checkpoint: random initialisers (``nn.init``'s and
    ``Tensor.uniform_`` / ``normal_``) leave their tensor as allocated and ``torch.rand`` / ``randn`` return
    uninitialised tensors. Every value they would have made is overwritten by the strict load that follows.

    Not the meta device: on the bundled model its per-call dispatch cost more than the init it saves
    (measured, 1 thread: build 29 ms with init, 39 ms on meta, 16 ms with this). A torch function mode is
    thread-local, so a model built on another thread meanwhile is initialised as usual."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            return args[0] if args else kwargs["tensor"]
        if func in _RANDOM_FACTORIES:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


_INITIALISERS = frozenset(
    {
        nn.init.kaiming_uniform_,
        nn.init.kaiming_normal_,
        nn.init.xavier_uniform_,
        nn.init.xavier_normal_,
        nn.init.uniform_,
        nn.init.normal_,
        nn.init.trunc_normal_,
        nn.init.orthogonal_,
        Tensor.uniform_,
        Tensor.normal_,
    }
)
_RANDOM_FACTORIES = frozenset({torch.rand, torch.randn})


def load_weights(model: BandSplitSeparator, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model``, naming missing / unexpected / mis-shaped keys in one line."""
    own = model.state_dict()
    _check_layout(state, own, source)
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def _check_layout(state: dict[str, Tensor], own: dict[str, Tensor], source: str) -> None:
    problems = layout_problems(
        {k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in own.items()}
    )
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(problems))


def _owned(state: dict[str, Tensor], own: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``state``'s tensors in the model's dtypes on ``device``, each with storage of its own: a tensor that
    is a view into a larger storage (an unpickled archive's) or shares one with another key is copied, so
    that the model neither aliases two weights nor keeps the rest of a checkpoint alive. Host tensors bound
    for an accelerator go there in one copy per dtype (:func:`_owned_batched`)."""
    if device.type != "cpu" and all(state[k].device.type == "cpu" for k in own):
        return _owned_batched(state, own, device)
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, want in own.items():
        v = state[k]
        t = v.detach().to(device=device, dtype=want.dtype)
        whole = t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.nbytes and t.is_contiguous()
        if t.untyped_storage().data_ptr() in seen or not whole:
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def _owned_batched(
    state: dict[str, Tensor], own: dict[str, Tensor], device: torch.device
) -> dict[str, Tensor]:
    """:func:`_owned` for host tensors going to ``device``, in one host-to-device copy per source dtype.

    Tensor by tensor, the bundled model's 595 weights took ~0.3 s of a ``bsmamba2 separate`` on an H200 (a
    sampled profile, issue 12): each copy from pageable memory waits for the device. Here each dtype's
    tensors are packed into one flat host buffer and copied once, then cut into the model's tensors on the
    device; each is cast or cloned there, so it owns its storage and the packed buffer is freed.
    Same values as :func:`_owned` (a cast is exact whichever side makes it)."""
    keys = list(own)
    groups: dict[torch.dtype, list[str]] = {}
    for k in keys:
        groups.setdefault(state[k].dtype, []).append(k)
    out: dict[str, Tensor] = {}
    for dtype, names in groups.items():
        flat = torch.cat([state[k].detach().reshape(-1) for k in names]).to(device)  # (sum of numels,)
        start = 0
        for k in names:
            n = state[k].numel()
            piece = flat[start : start + n].view(state[k].shape)
            want = own[k].dtype
            out[k] = piece.to(want) if want != dtype else piece.clone()
            start += n
        del flat
    return {k: out[k] for k in keys}


def _existing_file(path: str | os.PathLike[str], *, missing: str, folder: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: {missing}")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not {folder}")
    return p
