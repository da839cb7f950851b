"""Official-format checkpoints for the tests, written from OFFICIAL_SPEC §2 (key names, shapes, order, the
Lightning wrapping), not from our model code, so a naming slip on either side shows up as a failure."""

from __future__ import annotations

import collections
import contextlib
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bsmamba2.checkpoints import convert_checkpoint
from bsmamba2.config import PAPER_BAND_WIDTHS, ModelConfig

# ---- official-format state dicts, from OFFICIAL_SPEC §2.1 --------------------------------------------------

SMALL: dict[str, Any] = dict(
    dim=16, depth=2, d_state=8, expand=2, headdim=8, d_conv=4, widths=(2, 2, 2, 2, 4, 5), channels=2
)
SMALL_N_FFT = 32  # the widths sum to 17 bins


def spec_shapes(
    dim: int = 256,
    depth: int = 6,
    d_state: int = 128,
    expand: int = 4,
    headdim: int = 64,
    d_conv: int = 4,
    widths: tuple[int, ...] = PAPER_BAND_WIDTHS,
    channels: int = 2,
    stems: int = 1,
) -> list[tuple[str, tuple[int, ...]]]:
    """The official BSModel's (key, shape) list in state-dict order, as OFFICIAL_SPEC §2.1 tabulates it."""
    d_inner = expand * dim
    heads = d_inner // headdim
    out: list[tuple[str, tuple[int, ...]]] = []
    for i in range(depth):
        for j in (0, 1):
            for blocks in ("forward_blocks", "backward_blocks"):
                P = f"layers.{i}.{j}.{blocks}.0"
                out += [
                    (f"{P}.norm.weight", (dim,)),
                    (f"{P}.mixer.dt_bias", (heads,)),
                    (f"{P}.mixer.A_log", (heads,)),
                    (f"{P}.mixer.D", (heads,)),
                    (f"{P}.mixer.in_proj.weight", (2 * d_inner + 2 * d_state + heads, dim)),
                    (f"{P}.mixer.conv1d.weight", (d_inner + 2 * d_state, 1, d_conv)),
                    (f"{P}.mixer.conv1d.bias", (d_inner + 2 * d_state,)),
                    (f"{P}.mixer.norm.weight", (d_inner,)),
                    (f"{P}.mixer.out_proj.weight", (dim, d_inner)),
                ]
            out += [
                (f"layers.{i}.{j}.linear.weight", (2 * dim, dim, 1)),
                (f"layers.{i}.{j}.linear.bias", (dim,)),
            ]
    out.append(("final_norm.gamma", (dim,)))
    for k, f in enumerate(widths):
        n = 2 * channels * f
        out += [
            (f"band_split.to_features.{k}.0.gamma", (n,)),
            (f"band_split.to_features.{k}.1.weight", (dim, n)),
            (f"band_split.to_features.{k}.1.bias", (dim,)),
        ]
    for s in range(stems):
        for k, f in enumerate(widths):
            n = 2 * channels * f
            P = f"mask_estimators.{s}.to_freqs.{k}.0"
            out += [
                (f"{P}.0.weight", (4 * dim, dim)),
                (f"{P}.0.bias", (4 * dim,)),
                (f"{P}.2.weight", (2 * n, 4 * dim)),
                (f"{P}.2.bias", (2 * n,)),
            ]
    return out


def random_state(
    shapes: list[tuple[str, tuple[int, ...]]], seed: int
) -> collections.OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict((k, torch.randn(s, generator=g)) for k, s in shapes)


def expected_ours(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OFFICIAL_SPEC §1.5: our merge layer is nn.Linear with weight = official[:, :, 0].T; all else is equal."""
    out = {}
    for k, v in official.items():
        out[k] = v[:, :, 0].T if k.endswith(".linear.weight") else v
    return out


def small_cfg(**changes: Any) -> ModelConfig:
    base: dict[str, Any] = dict(
        dim=16,
        depth=2,
        stems=("vocals",),
        n_fft=SMALL_N_FFT,
        hop_length=8,
        band_widths=SMALL["widths"],
        mamba2=dict(d_state=8, expand=2, headdim=8),
    )
    base.update(changes)
    return ModelConfig(**base)


# ---- an OmegaConf look-alike (pickled under omegaconf's module names; omegaconf is not installed) -----------


class ContainerMetadata:
    def __init__(self) -> None:
        self.ref_type = typing.Any
        self.object_type = dict
        self.key_type = typing.Any
        self.element_type = typing.Any
        self.optional = True
        self.flags: dict[str, Any] = {}


class AnyNode:
    def __init__(self, value: Any, parent: Any) -> None:
        self._val = value
        self._metadata = ContainerMetadata()
        self._parent = parent


class DictConfig:
    def __init__(self, content: dict[str, Any], parent: Any = None) -> None:
        self._metadata = ContainerMetadata()
        self._parent = parent
        self._flags_cache = None
        self._content = {k: _node(v, self) for k, v in content.items()}

    def __getstate__(self) -> dict[str, Any]:  # as omegaconf's Container.__getstate__
        state = dict(self.__dict__)
        state.pop("_flags_cache")
        return state


class ListConfig(DictConfig):
    def __init__(self, content: list[Any], parent: Any = None) -> None:
        self._metadata = ContainerMetadata()
        self._parent = parent
        self._flags_cache = None
        self._content = [_node(v, self) for v in content]  # type: ignore[assignment]


def _node(v: Any, parent: Any) -> Any:
    if isinstance(v, dict):
        return DictConfig(v, parent)
    if isinstance(v, list):
        return ListConfig(v, parent)
    return AnyNode(v, parent)


HPARAMS = {
    "model": {"dim": 16, "depth": 2, "stereo": True, "module_type": "mamba2", "mask_estimator_depth": 2},
    "featurizer": {"n_fft": SMALL_N_FFT, "win_length": SMALL_N_FFT, "hop_length": 8},
    "multi_featurizer": [{"n_fft": 4096, "win_length": 4096, "hop_length": 147}],
    "train_dataset": {"target": ["vocals"]},
}


@contextlib.contextmanager
def fake_omegaconf() -> Iterator[None]:
    """Make the look-alike classes picklable as omegaconf.* while saving; they are gone again afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        modules: dict[str, list[type]] = {
            "omegaconf": [],
            "omegaconf.base": [ContainerMetadata],
            "omegaconf.nodes": [AnyNode],
            "omegaconf.dictconfig": [DictConfig],
            "omegaconf.listconfig": [ListConfig],
        }
        for mod_name, classes in modules.items():
            mod = types.ModuleType(mod_name)
            for cls in classes:
                mp.setattr(cls, "__module__", mod_name)
                setattr(mod, cls.__name__, cls)
            mp.setitem(sys.modules, mod_name, mod)
        yield


def lightning_ckpt(
    model_state: dict[str, torch.Tensor],
    ema: list[torch.Tensor] | None,
    hparams: Any,
    n_fft: int = SMALL_N_FFT,
) -> dict[str, Any]:
    """A PyTorch Lightning checkpoint as the official PLModel writes it (OFFICIAL_SPEC §2.2)."""
    sd: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    sd["featurizer.window"] = torch.hann_window(n_fft)
    sd.update((f"model.{k}", v) for k, v in model_state.items())
    sd["inverse_featurizer.window"] = torch.hann_window(n_fft)
    for i, w in enumerate((4096, 2048, 1024, 512, 256)):
        sd[f"multi_featurizer.{i}.window"] = torch.hann_window(w // 64)  # sizes do not matter; kept small
    opt: dict[str, Any] = {
        "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 5e-4, "params": [0]}]}
    }
    if ema is not None:
        opt.update(ema=ema, current_step=3, decay=0.999, every_n_steps=1)
    return {
        "epoch": 1,
        "global_step": 3,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [opt],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }


def write_small_official(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], list[torch.Tensor]]:
    """A small Lightning checkpoint with EMA weights and OmegaConf hyper-parameters: (path, raw, ema)."""
    shapes = spec_shapes(**SMALL)
    raw = random_state(shapes, seed=0)
    ema = list(random_state(shapes, seed=1).values())
    path = tmp_path / "official.ckpt"
    with fake_omegaconf():
        torch.save(lightning_ckpt(raw, ema, DictConfig(HPARAMS)), path)
    assert "omegaconf" not in sys.modules
    return path, raw, ema


def assert_landed(ours: dict[str, torch.Tensor], official: dict[str, torch.Tensor]) -> None:
    """Every official tensor sits, bit for bit, at its mapped parameter of ours; nothing else is there."""
    want = expected_ours(official)
    assert sorted(ours) == sorted(want)
    for k, v in want.items():
        assert ours[k].dtype == torch.float32, k
        assert torch.equal(ours[k], v), k


def converted(path: Path, **kw: Any) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, state) of a converted foreign checkpoint."""
    c = convert_checkpoint(path, **kw)
    return c.cfg, c.state
