"""Official Lightning / MSST checkpoints to our config and names (bsmamba2.checkpoints.official,
official_layout, official_config), and their one-line errors."""

from __future__ import annotations

import collections
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from official_samples import (
    SMALL,
    SMALL_N_FFT,
    assert_landed,
    converted,
    lightning_ckpt,
    random_state,
    small_cfg,
    spec_shapes,
    write_small_official,
)

from bsmamba2.checkpoints import convert_checkpoint
from bsmamba2.checkpoints.official import from_state_dict
from bsmamba2.checkpoints.official_layout import official_state_shapes
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError


@pytest.fixture
def small_official(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], list[torch.Tensor]]:
    return write_small_official(tmp_path)


# ---- official Lightning checkpoints -------------------------------------------------------------------------


def test_official_lightning_raw_weights(small_official: tuple[Path, dict, list]) -> None:
    path, raw, _ = small_official
    cfg, state = converted(path)
    assert cfg == small_cfg()  # hop 8 comes from the featurizer hyper-parameters, the rest from shapes
    assert_landed(state, raw)
    assert "omegaconf" not in sys.modules  # read as data: nothing was imported


def test_official_lightning_ema_weights(small_official: tuple[Path, dict, list]) -> None:
    path, raw, ema = small_official
    c = convert_checkpoint(path, ema=True)
    assert c.weights == "ema" and c.kind == "Lightning checkpoint" and c.prefix == "model."
    assert_landed(c.state, dict(zip(raw, ema)))
    assert sorted(c.ignored)[:2] == ["featurizer.window", "inverse_featurizer.window"]


def test_paper_size_checkpoint(tmp_path: Path) -> None:
    """All 675 official tensors at full size (stride-0 views: one value each, ~no memory), raw and EMA."""
    shapes = spec_shapes()
    assert len(shapes) == 675
    assert sum(torch.Size(s).numel() for _, s in shapes) == 48_098_188  # OFFICIAL_SPEC §1.8, paper Table I
    assert list(official_state_shapes(ModelConfig.paper()).items()) == shapes
    raw = {k: torch.full((1,) * len(s), float(i)).expand(s) for i, (k, s) in enumerate(shapes)}
    ema = [torch.full((1,) * len(s), 1000.0 + i).expand(s) for i, (_, s) in enumerate(shapes)]
    path = tmp_path / "paper.ckpt"
    torch.save(lightning_ckpt(raw, ema, {"lr": 5e-4}, n_fft=2048), path)
    assert path.stat().st_size < 2_000_000

    for ema_flag, base in ((False, 0.0), (True, 1000.0)):
        t0 = time.perf_counter()
        cfg, state = converted(path, ema=ema_flag)
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
    cfg, state = converted(path)
    assert cfg == small_cfg(stems=("vocals", "other"), hop_length=441)  # no hyper-parameters: default hop
    assert_landed(state, raw)


def test_msst_safetensors_and_half_precision(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    raw = {k: v.half() for k, v in random_state(spec_shapes(**SMALL, stems=2), seed=3).items()}
    path = tmp_path / "msst.safetensors"
    save_file(raw, str(path))
    c = convert_checkpoint(path)
    assert c.kind == "safetensors state dict" and c.cfg.stems == ("vocals", "other")
    assert_landed(c.state, {k: v.float() for k, v in raw.items()})
    cfg, state = from_state_dict(raw, source="x")  # the route load_model takes for such files
    assert cfg == c.cfg and all(torch.equal(state[k], c.state[k]) for k in state)


def test_mono_model_and_stem_names(tmp_path: Path) -> None:
    raw = random_state(spec_shapes(**{**SMALL, "channels": 1}, stems=4), seed=4)
    path = tmp_path / "mono.pt"
    torch.save(raw, path)
    cfg, state = converted(path)
    assert cfg.audio_channels == 1 and cfg.band_widths == SMALL["widths"] and cfg.n_fft == SMALL_N_FFT
    assert cfg.stems == ("vocals", "drums", "bass", "other")
    assert_landed(state, raw)
    cfg, _ = converted(path, stems=["a", "b", "c", "d"])
    assert cfg.stems == ("a", "b", "c", "d")
    with pytest.raises(CheckpointError, match="2 stem names given .* has 4 mask estimators"):
        converted(path, stems=["a", "b"])


def test_hyper_parameters_never_beat_shapes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = random_state(spec_shapes(**SMALL), seed=5)
    hp = {
        "model": {"dim": 999, "depth": 2, "stereo": False},
        "featurizer": {"n_fft": SMALL_N_FFT, "hop_length": 8},
    }
    path = tmp_path / "lying.ckpt"
    torch.save(lightning_ckpt(raw, None, hp), path)
    with caplog.at_level("WARNING"):
        cfg, _ = converted(path)
    assert cfg == small_cfg()
    assert "dim=999" in caplog.text and "stereo=False" in caplog.text


# ---- errors: one line each ----------------------------------------------------------------------------------


def _one_line_error(path: Path, match: str, **kw: Any) -> None:
    with pytest.raises(CheckpointError, match=match) as e:
        converted(path, **kw)
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
