"""FramePlan (bsmamba2.streaming.plan, with frame_blocks and frame_heads): the causal model's step in few
kernels computes ``step_spec``'s function, for any piece lengths, with the scaled SSM state folded back (both
of its branches) and any number of updates pending, the band SSD in both of its forms. The network
runs in float64; the masks come out as complex64, hence the float32 tolerances."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.model.framing import causal_stft
from bsmamba2.model.mixers.mamba2 import Mamba2
from bsmamba2.streaming import CausalStream, frame_blocks
from bsmamba2.streaming.frame_heads import FrameHeads
from bsmamba2.streaming.plan import FramePlan


def _model(
    lookahead: int = 0, seed: int = 0, decay_scale: float = 0.0, **overrides: object
) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig.tiny(causal=True, lookahead=lookahead, depth=2, **overrides)
    model = build_model(cfg).eval().double()
    with torch.no_grad():  # move every parameter off its initial value (norm weights 1, D 1, ...)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for mod in model.modules():  # larger A: state decays fast, the plan's scale folds back often
            if isinstance(mod, Mamba2) and decay_scale:
                mod.A_log.add_(decay_scale)
    return model


@pytest.mark.parametrize(("lookahead", "decay_scale", "ngroups"), [(0, 0.0, 1), (2, 0.0, 2), (0, 4.0, 1)])
def test_plan_step_equals_step_spec_and_forward_spec(
    lookahead: int, decay_scale: float, ngroups: int
) -> None:
    model = _model(lookahead, seed=lookahead, decay_scale=decay_scale, mamba2={"ngroups": ngroups})
    assert FramePlan.supports(model)
    plan = FramePlan(model)
    cfg = model.cfg
    X = causal_stft(torch.randn(2, 2, 4000, dtype=torch.float64), cfg.n_fft, cfg.hop_length)  # (b, c, f, 66)
    with torch.no_grad():
        whole = model.forward_spec(X)
        ref_state, plan_state = model.stream_state(2), plan.stream_state(2, X.device)
        ours, theirs, t = [], [], 0
        for n in (1, 1, 0, 3, 1, 7, 20, 33):
            a, ref_state = model.step_spec(X[..., t : t + n], ref_state)
            b, plan_state = plan.step(X[..., t : t + n], plan_state)
            theirs.append(a)
            ours.append(b)
            t += n
        tail = torch.zeros_like(X[..., :lookahead])
        theirs.append(model.step_spec(tail, ref_state)[0])
        ours.append(plan.step(tail, plan_state)[0])
    got = torch.cat(ours, dim=-1)
    torch.testing.assert_close(got, torch.cat(theirs, dim=-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("decay_scale", "pending"), [(0.0, 8), (6.0, 8), (0.0, 1), (0.0, 3), (6.0, 3)])
def test_scale_folds_both_ways(decay_scale: float, pending: int) -> None:
    """Frame by frame, the plan's scale falls until it is folded into S̃ (it rises again: first branch); a
    fast-decaying model (A ≈ −e⁶·…) wipes the state each frame (the scale stays 1: second branch). The output
    stays the reference's either way, whatever the number of updates kept pending (folds land on frames
    with some pending)."""
    model = _model(seed=3, decay_scale=decay_scale)
    plan = FramePlan(model)
    X = causal_stft(torch.randn(1, 2, 9000, dtype=torch.float64), model.cfg.n_fft, model.cfg.hop_length)
    with torch.no_grad():
        whole = model.forward_spec(X)
        state, out, rose, ones = plan.stream_state(1, X.device, pending=pending), [], False, True
        for t in range(X.shape[-1]):
            before = [s.scale.clone() for s in state.layers]
            y, state = plan.step(X[..., t : t + 1], state)
            out.append(y)
            rose |= t > 0 and any(
                bool((s.scale > b).any()) for s, b in zip(state.layers, before, strict=True)
            )
            ones &= all(bool((s.scale == 1).all()) for s in state.layers)
    assert (rose, ones) == ((True, False) if decay_scale == 0 else (False, True))
    torch.testing.assert_close(torch.cat(out, dim=-1), whole, rtol=1e-5, atol=1e-6)


def test_stream_uses_the_plan_only_where_it_fits() -> None:
    model = _model().float()
    assert CausalStream(model)._plan is not None
    assert CausalStream(model, dtype=torch.bfloat16)._plan is None  # autocast: the model's own step
    assert not FramePlan.supports(build_model(ModelConfig.tiny()))  # bidirectional


@pytest.mark.parametrize("decay_scale", [0.0, 3.0])
def test_band_ssd_forms_agree_with_the_block(monkeypatch: pytest.MonkeyPatch, decay_scale: float) -> None:
    """The band block's SSD in both forms (decay factored around the midpoint; decay matrices formed, for
    decays past FACTORED_RANGE) computes the model's bidirectional band block."""
    model = _model(seed=5, decay_scale=decay_scale)
    plan = FramePlan(model)
    block = model.layers[1][1]
    x = torch.randn(3, model.cfg.num_bands, model.cfg.dim, dtype=torch.float64)
    with torch.no_grad():
        want = block(x)
        got = {}
        for name, bound in (("factored", float("inf")), ("quadratic", -1.0)):
            monkeypatch.setattr(frame_blocks, "FACTORED_RANGE", bound)
            got[name] = plan.band[1](x)
    torch.testing.assert_close(got["factored"], want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["quadratic"], want, rtol=1e-9, atol=1e-9)


def test_heads_compute_the_split_and_the_masks() -> None:
    """FrameHeads: the band split, final norm and mask heads of the model, for several rows at once."""
    model = _model(seed=6)
    heads = FrameHeads(model.band_split, model.final_norm, list(model.mask_estimators))
    feats = sum(model.band_split.band_features)
    x = torch.randn(5, feats, dtype=torch.float64)
    z = torch.randn(5, model.cfg.num_bands, model.cfg.dim, dtype=torch.float64)
    with torch.no_grad():
        split = heads.split(x)  # (k, rows, d)
        masks = heads.masks(z.transpose(0, 1))  # per stem (rows, features)
        want_split = model.band_split(x[:, None])[:, 0]  # (rows, k, d)
        want_masks = [est(model.final_norm(z)[:, None])[:, 0] for est in model.mask_estimators]
    torch.testing.assert_close(split.transpose(0, 1), want_split, rtol=1e-9, atol=1e-9)
    for got, want in zip(masks, want_masks, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
