"""ModelConfig: mixer settings as sections, presets, validation, and old flat configs still loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from bsmamba2.config import (
    LEGACY_KEYS,
    MIXER_SETTINGS,
    Mamba2Config,
    ModelConfig,
    RoFormerConfig,
    model_config_from_dict,
)
from bsmamba2.configio import ConfigError
from bsmamba2.errors import UserError
from bsmamba2.train.config import load_config

BUNDLED = Path(__file__).resolve().parents[1] / "bsmamba2" / "assets" / "default.safetensors"


def test_presets() -> None:
    """The section values behind each preset (the parameter counts are pinned in test_model.py)."""
    paper = ModelConfig.paper()
    assert paper.mixer == "mamba2" and paper.mixer_settings is paper.mamba2
    assert paper.mamba2 == Mamba2Config(d_state=128, expand=4, headdim=64, ngroups=1, d_conv=4, chunk_size=64)
    rof = ModelConfig.roformer_paper()
    assert (rof.dim, rof.mixer_settings) == (384, RoFormerConfig(heads=8, dim_head=64, ff_mult=4))
    tiny = ModelConfig.tiny()
    assert tiny.mamba2 == Mamba2Config(d_state=8, expand=2, headdim=8, chunk_size=16)
    assert tiny.roformer == RoFormerConfig(heads=2, dim_head=8)
    # a section override changes only the settings it names; a built section replaces the preset's
    t = ModelConfig.tiny(mamba2={"d_state": 32})
    assert t.mamba2 == Mamba2Config(d_state=32, expand=2, headdim=8, chunk_size=16)
    assert ModelConfig.tiny(mamba2=Mamba2Config(headdim=8)).mamba2 == Mamba2Config(headdim=8)
    assert tiny.replace(mamba2={"headdim": 4}).mamba2 == Mamba2Config(
        d_state=8, expand=2, headdim=4, chunk_size=16
    )


def test_section_validation() -> None:
    with pytest.raises(ValueError, match="mamba2.d_state must be positive"):
        Mamba2Config(d_state=0)
    with pytest.raises(ValueError, match="roformer.heads must be positive"):
        RoFormerConfig(heads=0)
    with pytest.raises(ValueError, match="must be divisible by headdim"):
        ModelConfig(dim=20, mamba2={"expand": 1})
    with pytest.raises(ValueError, match="must be divisible by ngroups"):
        ModelConfig(mamba2={"ngroups": 3})
    # only the active mixer's sizes must fit the model width
    assert ModelConfig(mixer="roformer", dim=20, mamba2={"expand": 1}).dim == 20
    with pytest.raises(ValueError, match="unknown config key 'mamba2.heads'"):
        ModelConfig(mamba2={"heads": 2})


def test_nested_round_trip() -> None:
    cfg = ModelConfig.tiny(stems=("vocals", "drums"), mamba2={"d_state": 4})
    d = cfg.to_dict()
    assert d["mamba2"]["d_state"] == 4 and d["roformer"]["heads"] == 2
    assert not set(LEGACY_KEYS) & set(d)  # the flat keys are no longer written
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == cfg


def _flat(cfg: ModelConfig) -> dict:
    """``cfg`` in the flat form written before the mixer sections existed."""
    d = cfg.to_dict()
    for section in MIXER_SETTINGS:
        d.update(d.pop(section))
    return d


def test_legacy_flat_dict_loads() -> None:
    cfg = ModelConfig.tiny(mixer="roformer", mamba2={"d_state": 4}, roformer={"dim_head": 16})
    flat = _flat(cfg)
    assert "d_state" in flat and "mamba2" not in flat
    assert ModelConfig.from_dict(flat) == cfg
    with pytest.raises(ConfigError, match="same setting"):
        ModelConfig.from_dict({**flat, "mamba2": {"d_state": 4}})
    with pytest.raises(ConfigError, match="unknown config key 'model.d_stat'"):
        ModelConfig.from_dict({**flat, "d_stat": 4})


# The config JSON of the first bundled model (v1, in the metadata of every model file written before the
# mixer sections), verbatim: such files must keep loading.
LEGACY_JSON = (
    '{"audio_channels": 2, "band_widths": ['
    + ", ".join(["2"] * 24 + ["4"] * 12 + ["12"] * 8 + ["24"] * 8)
    + ", "
    + ", ".join(["48"] * 8)
    + ', 128, 129], "chunk_size": 64, "d_conv": 4, "d_state": 64, "depth": 4, '
    '"dim": 128, "dim_head": 64, "expand": 2, "ff_mult": 4, "headdim": 32, "heads": 8, "hop_length": 441, '
    '"mask_mlp_mult": 2, "mixer": "mamba2", "n_fft": 2048, "ngroups": 1, "sample_rate": 44100, "stems": ["vocals"]}'
)


def test_bundled_model_config_is_nested_and_loads() -> None:
    with safe_open(str(BUNDLED), framework="pt") as f:
        raw = json.loads(f.metadata()["config"])
    assert "mamba2" in raw and "d_state" not in raw
    assert ModelConfig.from_dict(raw).mamba2 == Mamba2Config(d_state=64, expand=2, headdim=32, chunk_size=64)


def test_legacy_flat_model_config_loads() -> None:
    """Model files written before the sections store the flat JSON; it reads as the sections."""
    raw = json.loads(LEGACY_JSON)
    assert raw["d_state"] == 64 and "mamba2" not in raw
    cfg = ModelConfig.from_dict(raw)
    assert cfg.mamba2 == Mamba2Config(d_state=64, expand=2, headdim=32, chunk_size=64)
    assert cfg.roformer == RoFormerConfig()  # its unused flat heads/dim_head/ff_mult were the defaults
    assert (cfg.dim, cfg.depth, cfg.mask_mlp_mult) == (128, 4, 2)


def test_yaml_sections_and_legacy_keys(tmp_path: Path) -> None:
    nested = model_config_from_dict({"preset": "tiny", "dim": 32, "mamba2": {"headdim": 16, "d_state": "12"}})
    assert nested == ModelConfig.tiny(dim=32, mamba2={"headdim": 16, "d_state": 12})
    assert model_config_from_dict({"preset": "tiny", "dim": 32, "headdim": 16, "d_state": 12}) == nested
    path = tmp_path / "c.yaml"
    for model, key in (
        ({"preset": "tiny", "d_state": 12}, "model.d_state"),
        ({"preset": "tiny", "mamba2": {"d_state": 12}}, "model.mamba2.d_state"),
    ):
        path.write_text(yaml.safe_dump({"model": model}))
        assert load_config(path).model.mamba2.d_state == 12
        assert load_config(path, [f"{key}=64"]).model.mamba2 == Mamba2Config(
            d_state=64, expand=2, headdim=8, chunk_size=16
        )
    # the other spelling of a setting the file gives already is refused, not silently ranked
    with pytest.raises(UserError, match="model.d_state and model.mamba2.d_state are the same setting"):
        load_config(path, ["model.d_state=64"])
    assert load_config(None, ["model.d_state=64"]).model.mamba2.d_state == 64  # a flat override alone


@pytest.mark.parametrize(
    "model,message",
    [
        (
            {"mamba2": {"d_stat": 1}},
            "unknown config key 'model.mamba2.d_stat' (model.mamba2 accepts: d_state,",
        ),
        ({"dimm": 1}, "unknown config key 'model.dimm' (model accepts: preset, mixer,"),
        ({"mamba2": 5}, "model.mamba2 must be a mapping"),
        ({"mamba2": {"d_state": "many"}}, "model.mamba2.d_state must be an integer"),
        ({"mamba2": {"d_state": 0}}, "invalid model config: mamba2.d_state must be positive"),
        ({"d_state": 1, "mamba2": {"d_state": 2}}, "model.d_state and model.mamba2.d_state"),
        ({"preset": "huge"}, "model.preset must be one of"),
    ],
)
def test_yaml_errors_are_one_line(model: dict, message: str) -> None:
    with pytest.raises(UserError) as e:
        model_config_from_dict(model)
    assert message in str(e.value) and "\n" not in str(e.value)
