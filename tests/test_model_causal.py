"""The causal BSMamba2 (model.causal): no output depends on the future beyond the latency, frame-by-frame
stepping equals the whole, forward-only time blocks, and non-causal models unchanged."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.checkpoints import load_model, save_model
from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.model.dualpath import BidirectionalBlock, ForwardBlock
from bsmamba2.model.framing import causal_stft
from bsmamba2.model.mixers.base import NotStreamableError


def _model(lookahead: int = 0, seed: int = 0, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig.tiny(causal=True, lookahead=lookahead, **overrides)).eval()
    with torch.no_grad():  # move every parameter off its initial value (norm weights 1, D 1, ...)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("lookahead", [0, 2])
def test_output_does_not_depend_on_the_future(lookahead: int) -> None:
    """Perturb the input from sample k on: outputs before k − latency stay bit-identical; later ones change."""
    model = _model(lookahead)
    lat = model.cfg.latency
    assert lat == model.cfg.n_fft - 1 + lookahead * model.cfg.hop_length
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4000, generator=gen)
    with torch.no_grad():
        y = model(x)
        for k in (1500, 2345, 3999):
            x2 = x.clone()
            x2[..., k:] += torch.randn(1, 2, 4000 - k, generator=gen)
            changed = (model(x2) - y).abs().amax(dim=(0, 1, 2)) > 0  # (n,)
            first = int(torch.nonzero(changed)[0])
            assert k - lat <= first <= k  # the bound holds, and is not vacuous (something does change)


def test_time_blocks_run_forward_only_band_blocks_both_ways() -> None:
    model = _model()
    for time_block, band_block in model.layers:
        assert isinstance(time_block, ForwardBlock) and time_block.streamable
        assert isinstance(band_block, BidirectionalBlock)
    names = set(model.state_dict())
    assert "layers.0.0.forward_blocks.0.mixer.in_proj.weight" in names
    assert not any(n.startswith("layers.0.0.backward_blocks") for n in names)
    assert model.state_dict()["layers.0.0.linear.weight"].shape == (16, 16)


@pytest.mark.parametrize("lookahead", [0, 3])
def test_step_spec_equals_forward_spec(lookahead: int) -> None:
    model = _model(lookahead, seed=2)
    cfg = model.cfg
    X = causal_stft(torch.randn(2, 2, 3000), cfg.n_fft, cfg.hop_length)  # (b, c, f, 50)
    with torch.no_grad():
        whole = model.forward_spec(X)
        state, out, t = model.stream_state(2), [], 0
        for n in (1, 3, 0, 1, 5, 17, 23):
            piece, state = model.step_spec(X[..., t : t + n], state)
            out.append(piece)
            t += n
        # The network is lookahead frames ahead; silence past the end decides the last frames.
        piece, state = model.step_spec(torch.zeros_like(X[..., :lookahead]), state)
        out.append(piece)
    torch.testing.assert_close(torch.cat(out, dim=-1), whole, rtol=1e-4, atol=1e-5)


def test_config_rules_and_serialisation(tmp_path) -> None:
    with pytest.raises(ValueError, match="lookahead"):
        ModelConfig.tiny(lookahead=2)
    with pytest.raises(ValueError, match="hop_length"):
        ModelConfig.tiny(causal=True, hop_length=200)
    with pytest.raises(NotStreamableError, match="causal"):
        build_model(ModelConfig.tiny(mixer="roformer", causal=True))
    with pytest.raises(NotStreamableError, match="causal"):
        build_model(ModelConfig.tiny()).stream_state(1)
    assert "causal" not in ModelConfig.tiny().to_dict()  # files of non-causal models are as before
    assert ModelConfig.tiny().latency == 0
    model = _model(1)
    save_model(model, tmp_path / "causal.safetensors")
    loaded = load_model(tmp_path / "causal.safetensors")
    assert loaded.cfg == model.cfg and loaded.cfg.causal and loaded.cfg.lookahead == 1
    x = torch.randn(1, 2, 1234)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("stems", [("vocals",), ("vocals", "drums", "bass")])
def test_grouped_bands_equal_the_per_band_modules(stems: tuple[str, ...]) -> None:
    """The width-batched band split and mask heads that streams use compute the per-band modules' function."""
    model = _model(seed=4, stems=stems)
    grouped = model.grouped_bands()
    assert len(grouped.groups) < model.cfg.num_bands
    X = causal_stft(torch.randn(2, 2, 2000), model.cfg.n_fft, model.cfg.hop_length)
    with torch.no_grad():
        z = model._features(X)
        torch.testing.assert_close(model._features(X, grouped), z, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model._masks(z, grouped), model._masks(z), rtol=1e-5, atol=1e-6)
