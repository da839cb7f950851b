"""Official / MSST checkpoint conversion and the restricted unpickler.

The "official" checkpoints here are written from OFFICIAL_SPEC §2 (key names, shapes, order, the Lightning
wrapping), not from our model code, so a naming slip on either side shows up as a failure.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import io
import os
import pickle
import sys
import time
import types
import typing
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bsmamba2.config import PAPER_BAND_WIDTHS, ModelConfig
from bsmamba2.errors import CheckpointError
from bsmamba2.model import convert
from bsmamba2.model.safe_pickle import Inert, LazyTensor, open_torch_archive, safe_torch_load, to_plain

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


@pytest.fixture
def small_official(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], list[torch.Tensor]]:
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


# ---- official Lightning checkpoints -------------------------------------------------------------------------


def test_official_lightning_raw_weights(small_official: tuple[Path, dict, list]) -> None:
    path, raw, _ = small_official
    cfg, state = convert.load_foreign_checkpoint(path)
    assert cfg == small_cfg()  # hop 8 comes from the featurizer hyper-parameters, the rest from shapes
    assert_landed(state, raw)
    assert "omegaconf" not in sys.modules  # read as data: nothing was imported


def test_official_lightning_ema_weights(small_official: tuple[Path, dict, list]) -> None:
    path, raw, ema = small_official
    c = convert.convert_checkpoint(path, ema=True)
    assert c.weights == "ema" and c.kind == "Lightning checkpoint" and c.prefix == "model."
    assert_landed(c.state, dict(zip(raw, ema)))
    assert sorted(c.ignored)[:2] == ["featurizer.window", "inverse_featurizer.window"]


def test_hyper_parameters_become_plain_data(small_official: tuple[Path, dict, list]) -> None:
    path, _, _ = small_official
    with open_torch_archive(path) as archive:
        ckpt = archive.load()
    assert isinstance(ckpt["hyper_parameters"], Inert)
    assert type(ckpt["hyper_parameters"]).qualname() == "omegaconf.dictconfig.DictConfig"
    assert to_plain(ckpt["hyper_parameters"]) == HPARAMS
    assert isinstance(ckpt["state_dict"]["model.final_norm.gamma"], LazyTensor)


def test_paper_size_checkpoint(tmp_path: Path) -> None:
    """All 675 official tensors at full size (stride-0 views: one value each, ~no memory), raw and EMA."""
    shapes = spec_shapes()
    assert len(shapes) == 675
    assert sum(torch.Size(s).numel() for _, s in shapes) == 48_098_188  # OFFICIAL_SPEC §1.8, paper Table I
    assert list(convert.official_state_shapes(ModelConfig.paper()).items()) == shapes
    raw = {k: torch.full((1,) * len(s), float(i)).expand(s) for i, (k, s) in enumerate(shapes)}
    ema = [torch.full((1,) * len(s), 1000.0 + i).expand(s) for i, (_, s) in enumerate(shapes)]
    path = tmp_path / "paper.ckpt"
    torch.save(lightning_ckpt(raw, ema, {"lr": 5e-4}, n_fft=2048), path)
    assert path.stat().st_size < 2_000_000

    for ema_flag, base in ((False, 0.0), (True, 1000.0)):
        t0 = time.perf_counter()
        cfg, state = convert.load_foreign_checkpoint(path, ema=ema_flag)
        assert time.perf_counter() - t0 < 10
        assert cfg == ModelConfig.paper()
        assert sorted(state) == sorted(k for k, _ in shapes)
        for i, (k, s) in enumerate(shapes):
            t = state[k]
            assert t.shape == ((s[1], s[0]) if k.endswith(".linear.weight") else s), k
            if any(t.stride()):  # the merge weights were transposed into real memory: check every value
                assert float(t.min()) == float(t.max()) == base + i, k
            else:  # still a stride-0 view: one value
                assert float(t[(0,) * t.dim()]) == base + i, k


# ---- MSST and other layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix"])
def test_msst_state_dict(tmp_path: Path, wrap: str) -> None:
    raw = random_state(spec_shapes(**SMALL, stems=2), seed=2)
    obj: Any = {
        "plain": raw,
        "state_dict": {"state_dict": raw},
        "model": {"model": raw, "epoch": 3},
        "module_prefix": collections.OrderedDict((f"module.{k}", v) for k, v in raw.items()),
    }[wrap]
    path = tmp_path / "msst.ckpt"
    torch.save(obj, path)
    cfg, state = convert.load_foreign_checkpoint(path)
    assert cfg == small_cfg(stems=("vocals", "other"), hop_length=441)  # no hyper-parameters: default hop
    assert_landed(state, raw)


def test_msst_safetensors_and_half_precision(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    raw = {k: v.half() for k, v in random_state(spec_shapes(**SMALL, stems=2), seed=3).items()}
    path = tmp_path / "msst.safetensors"
    save_file(raw, str(path))
    c = convert.convert_checkpoint(path)
    assert c.kind == "safetensors state dict" and c.cfg.stems == ("vocals", "other")
    assert_landed(c.state, {k: v.float() for k, v in raw.items()})
    cfg, state = convert.from_state_dict(raw, source="x")  # the route load_model takes for such files
    assert cfg == c.cfg and all(torch.equal(state[k], c.state[k]) for k in state)


def test_mono_model_and_stem_names(tmp_path: Path) -> None:
    raw = random_state(spec_shapes(**{**SMALL, "channels": 1}, stems=4), seed=4)
    path = tmp_path / "mono.pt"
    torch.save(raw, path)
    cfg, state = convert.load_foreign_checkpoint(path)
    assert cfg.audio_channels == 1 and cfg.band_widths == SMALL["widths"] and cfg.n_fft == SMALL_N_FFT
    assert cfg.stems == ("vocals", "drums", "bass", "other")
    assert_landed(state, raw)
    cfg, _ = convert.load_foreign_checkpoint(path, stems=["a", "b", "c", "d"])
    assert cfg.stems == ("a", "b", "c", "d")
    with pytest.raises(CheckpointError, match="2 stem names given .* has 4 mask estimators"):
        convert.load_foreign_checkpoint(path, stems=["a", "b"])


def test_hyper_parameters_never_beat_shapes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = random_state(spec_shapes(**SMALL), seed=5)
    hp = {
        "model": {"dim": 999, "depth": 2, "stereo": False},
        "featurizer": {"n_fft": SMALL_N_FFT, "hop_length": 8},
    }
    path = tmp_path / "lying.ckpt"
    torch.save(lightning_ckpt(raw, None, hp), path)
    with caplog.at_level("WARNING"):
        cfg, _ = convert.load_foreign_checkpoint(path)
    assert cfg == small_cfg()
    assert "dim=999" in caplog.text and "stereo=False" in caplog.text


# ---- the restricted unpickler -------------------------------------------------------------------------------


class ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class SystemPayload(ExecPayload):
    def __reduce__(self) -> Any:
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload(ExecPayload):
    def __reduce__(self) -> Any:
        return (builtins.open, (str(self.marker), "w"))


class TensorSubclassPayload(ExecPayload):
    """Hides the call inside torch's tensor-subclass rebuild record."""

    def __reduce__(self) -> Any:
        return (
            torch._tensor._rebuild_from_type_v2,
            (builtins.exec, torch.Tensor, (f"open({str(self.marker)!r}, 'w')",), {}),
        )


PAYLOADS = [ExecPayload, SystemPayload, OpenPayload, TensorSubclassPayload]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_malicious_hyper_parameters_do_not_run(tmp_path: Path, payload: type[ExecPayload]) -> None:
    marker = tmp_path / "pwned"
    with contextlib.suppress(Exception):  # the payload is live under plain pickle (it may fail after running)
        pickle.loads(pickle.dumps(payload(marker), protocol=2))
    assert marker.exists()
    marker.unlink()

    raw = random_state(spec_shapes(**SMALL), seed=6)
    path = tmp_path / "evil.ckpt"
    torch.save(lightning_ckpt(raw, None, {"cfg": payload(marker)}), path)
    cfg, state = convert.load_foreign_checkpoint(path)
    assert not marker.exists()
    assert_landed(state, raw)
    assert isinstance(safe_torch_load(path)["hyper_parameters"]["cfg"], Inert)
    assert not marker.exists()


def test_malicious_tensor_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw: dict[str, Any] = dict(random_state(spec_shapes(**SMALL), seed=7))
    raw["final_norm.gamma"] = SystemPayload(marker)
    path = tmp_path / "evil.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="not tensors .*final_norm.gamma"):
        convert.load_foreign_checkpoint(path)
    assert not marker.exists()


def test_build_opcode_cannot_tamper_with_shared_functions() -> None:
    """GLOBAL torch._utils._rebuild_tensor_v2, then BUILD (None, {"__defaults__": (7,)}): setattr on what
    find_class handed out must not reach the module-level function used by every later load."""
    from bsmamba2.model import safe_pickle

    before = safe_pickle._rebuild_tensor_v2.__defaults__
    name = b"__defaults__"
    data = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"  # PROTO 2, GLOBAL
        + b"N}X"
        + len(name).to_bytes(4, "little")
        + name
        + b"(K\x07ts\x86b."  # TUPLE2 (None, {name: (7,)}), BUILD
    )
    try:
        with contextlib.suppress(pickle.UnpicklingError, TypeError):  # refusing the BUILD is fine too
            safe_pickle.RestrictedUnpickler(io.BytesIO(data), lambda *a: None).load()
        assert safe_pickle._rebuild_tensor_v2.__defaults__ == before
    finally:
        safe_pickle._rebuild_tensor_v2.__defaults__ = before


def test_safe_load_matches_torch_load(tmp_path: Path) -> None:
    base = torch.randn(4, 5)
    obj = {
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "bf16": torch.randn(7).bfloat16(),
        "uint16": torch.tensor([1, 2, 3]).to(torch.uint16),  # written with _rebuild_tensor_v3
        "slice": base[:, 1:3],  # non-contiguous view sharing a storage with "base"
        "base": base,
        "stride0": torch.full((1,), 2.0).expand(3, 3),
        "empty": torch.zeros(0, 3),
        "misc": [1, 2.5, "s", None, (1, 2), {3}, b"bytes", torch.float16, torch.Size([2, 3])],
        "dd": collections.defaultdict(list, a=[1]),
    }
    path = tmp_path / "mix.pt"
    torch.save(obj, path)
    got = safe_torch_load(path)
    want = torch.load(path, weights_only=False)  # our own file: safe to load the normal way
    for k in ("param", "bf16", "slice", "base", "stride0", "empty"):
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert torch.equal(got["uint16"].long(), want["uint16"].long()) and got["uint16"].dtype == torch.uint16
    assert got["misc"] == want["misc"] and got["dd"] == {"a": [1]}


def test_big_endian_archive(tmp_path: Path) -> None:
    """A checkpoint written on a big-endian machine (byteorder record "big") loads with the right values."""
    t = torch.randn(5, 3)
    little = tmp_path / "little.pt"
    torch.save({"w": t}, little)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = (
                    torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, 4).flip(1).numpy().tobytes()
                )
            dst.writestr(info.filename, data)
    assert torch.equal(safe_torch_load(big)["w"], t)


# ---- errors: one line each ----------------------------------------------------------------------------------


def _one_line_error(path: Path, match: str, **kw: Any) -> None:
    with pytest.raises(CheckpointError, match=match) as e:
        convert.load_foreign_checkpoint(path, **kw)
    assert "\n" not in str(e.value)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    _one_line_error(text, "not a PyTorch checkpoint")
    z = tmp_path / "archive.pt"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hi")
    _one_line_error(z, "no data.pkl")
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    _one_line_error(legacy, "legacy PyTorch")
    trunc = tmp_path / "trunc.ckpt"
    good = tmp_path / "good.ckpt"
    torch.save(dict(random_state(spec_shapes(**SMALL), seed=8)), good)
    trunc.write_bytes(good.read_bytes()[:5000])
    _one_line_error(trunc, "not a readable PyTorch checkpoint")
    _one_line_error(tmp_path / "missing.ckpt", "no such file")


def test_checkpoint_of_another_model(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, other)
    _one_line_error(other, "not a BSMamba2 checkpoint: no band-split weights")
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    _one_line_error(module, r"pickled torch.nn.modules.linear.Linear object")


def test_bs_roformer_checkpoint_is_named(tmp_path: Path) -> None:
    raw = {k: v for k, v in random_state(spec_shapes(**SMALL), seed=9).items() if not k.startswith("layers.")}
    raw["layers.0.0.layers.0.0.to_qkv.weight"] = torch.zeros(48, 16)
    path = tmp_path / "bs_roformer.ckpt"
    torch.save(raw, path)
    _one_line_error(path, "BS-RoFormer-style checkpoint .*only BSMamba2")


def test_layout_problems_are_named(tmp_path: Path) -> None:
    base = random_state(spec_shapes(**SMALL), seed=10)
    cases = {
        "missing": (
            {k: v for k, v in base.items() if k != "layers.1.1.linear.bias"},
            "missing 1 keys \\(layers.1.1.linear.bias\\)",
        ),
        "unexpected": (
            {**base, "layers.0.0.forward_blocks.0.mlp.fc1.weight": torch.zeros(2)},
            "unexpected 1 keys",
        ),
        "shape": ({**base, "final_norm.gamma": torch.zeros(17)}, r"final_norm.gamma \(17,\) != \(16,\)"),
        "dtype": ({**base, "final_norm.gamma": torch.zeros(16, dtype=torch.int64)}, "int64 values"),
    }
    for name, (sd, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(sd, path)
        _one_line_error(path, match)


def test_ema_errors(tmp_path: Path) -> None:
    raw = random_state(spec_shapes(**SMALL), seed=11)
    no_ema = tmp_path / "no_ema.ckpt"
    torch.save(lightning_ckpt(raw, None, None), no_ema)
    _one_line_error(no_ema, "has no EMA weights", ema=True)
    short = tmp_path / "short.ckpt"
    torch.save(lightning_ckpt(raw, list(raw.values())[:-1], None), short)
    n = len(raw)
    _one_line_error(short, f"EMA list has {n - 1} tensors but the model has {n} parameters", ema=True)
    swapped = list(raw.values())
    swapped[0], swapped[-1] = swapped[-1], swapped[0]
    bad = tmp_path / "bad.ckpt"
    torch.save(lightning_ckpt(raw, swapped, None), bad)
    _one_line_error(bad, "EMA entry 0 has shape", ema=True)


# ---- through the model loader and the CLI -------------------------------------------------------------------


def test_load_model_and_cli(
    small_official: tuple[Path, dict, list], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from bsmamba2.cli import main
    from bsmamba2.model.checkpoint import load_model

    path, raw, ema = small_official
    model = load_model(path)  # .ckpt goes through load_foreign_checkpoint
    assert_landed(dict(model.state_dict()), raw)
    with torch.no_grad():
        assert model(torch.randn(1, 2, 100)).shape == (1, 1, 2, 100)

    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(path), "-o", str(out), "--ema", "--stems", "voice"]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = load_model(out)
    assert converted.cfg == small_cfg(stems=("voice",))
    assert_landed(dict(converted.state_dict()), dict(zip(raw, ema)))

    assert (
        main(["convert", str(out), "-o", str(tmp_path / "again.safetensors")]) == 1
    )  # already ours: one-line error, exit code 1
    err = capsys.readouterr().err
    assert "already a bsmamba2 model" in err and err.count("\n") == 1
