"""Training config: YAML files, dotted overrides, one-line errors, the LR schedule, EMA, checkpoint helpers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from bsmamba2.config import ModelConfig
from bsmamba2.data.sampler import MixRecipe, SamplerConfig
from bsmamba2.errors import UserError
from bsmamba2.train import ckpt
from bsmamba2.train.config import DataConfig, TrainConfig, apply_overrides, load_config, parse_value
from bsmamba2.train.ema import EMA
from bsmamba2.train.step import lr_at

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_paper_config_is_table_one() -> None:
    cfg = load_config(CONFIGS / "bsmamba2_paper.yaml")
    assert cfg.model == ModelConfig.paper()
    assert (cfg.batch_size, cfg.grad_accum, cfg.precision) == (5, 6, "bf16")
    assert cfg.optim.lr == 5e-4 and cfg.optim.weight_decay == 0.01 and cfg.optim.grad_clip == 3.0
    assert cfg.optim.schedule == "constant" and cfg.optim.ema_decay == 0.999
    assert cfg.data.segment_seconds == 8.0 and cfg.valid.segment_seconds == 8.0 and cfg.valid.overlap == 0.0
    assert cfg.loss.lambda_time == 10.0 and cfg.loss.windows == (4096, 2048, 1024, 512, 256)
    assert cfg.loss.hop_length == 147 and cfg.loss.min_n_fft == 2048 and cfg.loss.round_trip_target


def test_roformer_config_is_table_one() -> None:
    cfg = load_config(CONFIGS / "bsroformer_paper.yaml")
    assert cfg.model == ModelConfig.roformer_paper()
    assert (cfg.batch_size, cfg.grad_accum, cfg.optim.lr) == (4, 4, 5e-4)


@pytest.mark.parametrize(("name", "mixer"), [("tiny.yaml", "mamba2"), ("tiny_roformer.yaml", "roformer")])
def test_tiny_configs(name: str, mixer: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model == ModelConfig.tiny(mixer=mixer)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert (
        load_config(None, [f"{k}={v}" for k, v in _flat(cfg.to_dict())]) == cfg
    )  # the YAML is the whole config


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v)))
    return out


def test_overrides_reach_nested_fields_with_types() -> None:
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        ["optim.lr=1e-4", "model.dim=32", "max_steps=7", "data.gain_range=[0.25, 2]", "valid.use_ema=false"],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.dim == 32 and cfg.model.n_fft == 256  # the preset still applies
    assert cfg.max_steps == 7
    assert cfg.data.gain_range == (0.25, 2.0)
    assert cfg.valid.use_ema is False
    assert parse_value("5e-4") == 5e-4 and parse_value("null") is None and parse_value("abc") == "abc"


def test_defaults_without_a_file() -> None:
    assert load_config(None) == TrainConfig()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["model.dimm=1"], "unknown config key 'model.dimm'"),
        (["max_step=1"], "unknown config key 'max_step'"),
        (["optim.lr=fast"], "optim.lr must be a number"),
        (["batch_size=1.5"], "batch_size must be an integer"),
        (["compile=3"], "compile must be true or false"),
        (["optim.schedule=linear"], "optim.schedule must be one of"),
        (["model.preset=huge"], "model.preset must be one of"),
        (["model.n_fft=512"], "invalid model config"),  # paper bands no longer sum to the bin count
        (["optim.lr"], "not of the form key=value"),
        (["max_steps.x=1"], "is not a config section"),
        (["optim.schedule=cosine"], "needs optim.decay_steps or max_steps"),
        (["data.p_silent=2"], "data.p_silent must be in"),
        (["data.gain_range=[2, 1]"], "data.gain_range must be"),
        (["data.layout=zip"], "data.layout must be one of musdb, folders"),
        (["precision=fp16"], "precision must be one of bf16, fp32"),
    ],
)
def test_bad_configs_are_one_line_user_errors(overrides: list[str], message: str) -> None:
    base = CONFIGS / ("bsmamba2_paper.yaml" if "model.n_fft=512" in overrides else "tiny.yaml")
    if "optim.schedule=cosine" in overrides:
        overrides = [*overrides, "max_steps=0"]
    with pytest.raises(UserError, match=message) as info:
        load_config(base, overrides)
    assert "\n" not in str(info.value)


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "tiny_roformer.yaml", ["optim.schedule=cosine", "optim.warmup_steps=3"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_apply_overrides_does_not_mutate() -> None:
    d = {"optim": {"lr": 1.0}}
    out = apply_overrides(d, ["optim.lr=2"])
    assert d == {"optim": {"lr": 1.0}} and out == {"optim": {"lr": 2}}


def test_data_section_feeds_the_sampler() -> None:
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            "data.p_silent=0.25",
            "data.gain_range=[0.2, 3]",
            "data.activity_stems=[vocals]",
            "model.stems=[vocals,bass]",
        ],
    )
    sampler = SamplerConfig.from_recipe(cfg.data, targets=cfg.model.stems, sample_rate=cfg.model.sample_rate)
    for f in dataclasses.fields(MixRecipe):
        assert getattr(sampler, f.name) == getattr(cfg.data, f.name), f.name
    assert (sampler.p_silent, sampler.gain_range, sampler.activity_stems) == (0.25, (0.2, 3.0), ("vocals",))
    assert sampler.segment_seconds == 1.0 and sampler.targets == ("vocals", "bass") and not sampler.aligned
    assert DataConfig().p_silent == SamplerConfig().p_silent == 0.1  # one set of defaults (the official)


def test_lr_schedules() -> None:
    constant = TrainConfig(max_steps=100)
    assert [lr_at(s, constant) for s in (0, 50, 99)] == [5e-4] * 3
    warm = load_config(None, ["optim.warmup_steps=4", "max_steps=100"])
    assert [lr_at(s, warm) for s in range(5)] == pytest.approx([1.25e-4, 2.5e-4, 3.75e-4, 5e-4, 5e-4])
    cos = load_config(
        None, ["optim.schedule=cosine", "optim.warmup_steps=10", "max_steps=110", "optim.min_lr_ratio=0.1"]
    )
    assert lr_at(10, cos) == pytest.approx(5e-4)
    assert lr_at(60, cos) == pytest.approx(5e-5 + 0.5 * (5e-4 - 5e-5))
    assert lr_at(110, cos) == pytest.approx(5e-5) and lr_at(500, cos) == pytest.approx(5e-5)
    assert all(lr_at(s + 1, cos) <= lr_at(s, cos) for s in range(10, 120))
    assert not math.isnan(lr_at(0, cos))


def test_ema_update_is_an_exponential_average() -> None:
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    assert not ema.module.weight.requires_grad and not ema.module.training
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


def test_rng_state_survives_weights_only_load(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = ckpt.rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def _fake_ckpt(root: Path, step: int) -> Path:
    p = root / ckpt.step_dir_name(step)
    p.mkdir(parents=True)
    (p / "state.pt").write_bytes(b"")
    return p


def test_resume_resolution_and_rotation(tmp_path: Path) -> None:
    root = tmp_path / "run" / "checkpoints"
    for s in (1, 2, 3, 4):
        _fake_ckpt(root, s)
    (root / ".tmp_step_000005_99999").mkdir()  # a checkpoint a killed run left half-written
    ckpt.point(root, "best", "step_000001")
    ckpt.point(root, "last", "step_000004")
    assert ckpt.resolve_resume(tmp_path / "run") == root / "step_000004"
    assert ckpt.resolve_resume(root) == root / "step_000004"
    assert ckpt.resolve_resume(root / "step_000002" / "state.pt") == root / "step_000002"
    assert ckpt.resolve_resume(root / "best").resolve() == (root / "step_000001").resolve()
    assert ckpt.run_dir_of(root / "last") == (tmp_path / "run").resolve()
    ckpt.rotate(root, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == [
        "best",
        "last",
        "step_000001",
        "step_000003",
        "step_000004",
    ]
    with pytest.raises(UserError, match="no complete checkpoint"):
        ckpt.resolve_resume(tmp_path)
    with pytest.raises(UserError, match="no such"):
        ckpt.resolve_resume(tmp_path / "missing")


def test_bundled_configs_by_name_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bsmamba2 import cli

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the package's own copies are used
    for name, file in [
        ("tiny", "tiny.yaml"),
        ("paper", "bsmamba2_paper.yaml"),
        ("roformer_paper", "bsroformer_paper.yaml"),
        ("default_v2.yaml", "default_v2.yaml"),
    ]:
        assert cli.main(["train", name, "--print-config"]) == 0, name
        assert capsys.readouterr().out == load_config(CONFIGS / file).to_yaml(), name
    (tmp_path / "tiny.yaml").write_text("max_steps: 7\n")  # a file of that name wins over the bundled one
    assert load_config("tiny.yaml").max_steps == 7
    with pytest.raises(UserError, match="not found: nosuch.*bundled.*tiny"):
        load_config("nosuch")
