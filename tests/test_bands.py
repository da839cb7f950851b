"""Band split and mask heads (bsmamba2.model.bands): the run-batched layout (``forward``, ``forward_grouped``,
``GroupedBands``) computes the per-band reference modules' function (``forward_per_band``), offline shapes
(batch, many frames), gradients, autocast and the inference cache of stacked weights included, with the
official parameter names unchanged."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.config import Mamba2Config, ModelConfig
from bsmamba2.model import bands, build_model
from bsmamba2.model.bands import BandSplit, GroupedBands, MaskEstimator, set_grouped, width_runs


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.double()


def test_width_runs() -> None:
    assert width_runs((2, 2, 4, 4, 4, 2, 7)) == [(0, 2, 2), (2, 3, 4), (5, 1, 2), (6, 1, 7)]
    paper = ModelConfig().band_widths
    assert len(paper) == 62 and len(width_runs(paper)) < 10


@pytest.mark.parametrize("stems", [1, 3])
def test_grouped_layout_equals_per_band_modules(stems: int) -> None:
    features = tuple(4 * w for w in (2, 2, 2, 4, 4, 12, 3))  # stereo real+imag of each band's bins
    split = _perturbed(BandSplit(features, 8), 0)
    heads = [_perturbed(MaskEstimator(features, 8, mlp_mult=2), 1 + s) for s in range(stems)]
    names = {n for n, _ in split.named_parameters()}
    assert "to_features.6.1.weight" in names and "to_features.6.0.gamma" in names  # names as before
    x = torch.randn(3, 11, sum(features), dtype=torch.float64, requires_grad=True)
    z = split.forward_per_band(x)  # the reference
    torch.testing.assert_close(split(x), z, rtol=1e-12, atol=1e-12)  # grouped by default
    for head in heads:
        torch.testing.assert_close(head(z), head.forward_per_band(z), rtol=1e-12, atol=1e-12)
    grouped = GroupedBands(split, heads)  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(grouped.split(x), z, rtol=1e-12, atol=1e-12)
        ref = torch.stack([head.forward_per_band(z) for head in heads], dim=1)  # (b, s, t, features)
        torch.testing.assert_close(grouped.masks(z), ref, rtol=1e-12, atol=1e-12)

    # gradients through the live parameters, as the per-band modules give them
    def grads(out: torch.Tensor) -> list[torch.Tensor]:
        params = [x, *split.parameters(), *heads[0].parameters()]
        return list(torch.autograd.grad(out.pow(2).sum(), params))

    want = grads(heads[0].forward_per_band(split.forward_per_band(x)))
    got = grads(heads[0](split(x)))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


def _small_paper_band_model(stems: tuple[str, ...] = ("vocals", "drums")) -> torch.nn.Module:
    """The paper's 62 bands and STFT with tiny dims, weights moved off their init."""
    cfg = ModelConfig(dim=16, depth=1, stems=stems, mamba2=Mamba2Config(d_state=8, expand=2, headdim=8))
    torch.manual_seed(3)
    model = build_model(cfg, backend="torch")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_model_grouped_equals_per_band_fp32_values_and_gradients() -> None:
    """The offline forward with the run-batched band split and heads (the default) against the per-band
    reference modules, fp32, training mode: outputs and every gradient within 1e-5 relative."""
    model = _small_paper_band_model().train()
    wave = 0.1 * torch.randn(2, 2, 11025, generator=torch.Generator().manual_seed(0))
    probe = torch.randn(2, 2, 2, 11025, generator=torch.Generator().manual_seed(1))
    params = [p for p in model.parameters() if p.requires_grad]

    def run(grouped: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        set_grouped(model, grouped)
        out = model(wave)  # (b, s, c, n)
        return out.detach(), list(torch.autograd.grad((out * probe).sum(), params))

    want, want_grads = run(False)
    got, got_grads = run(True)
    assert _rel(got, want) <= 1e-5
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    worst = max((_rel(g, w), n) for g, w, n in zip(got_grads, want_grads, names, strict=True))
    assert worst[0] <= 1e-5, worst
    assert any("band_split" in n for n in names) and any("mask_estimators" in n for n in names)


def test_inference_cache_follows_weight_changes() -> None:
    """Without autograd the stacked weights are cached; an optimizer step, a load_state_dict and a dtype
    change each make the grouped output follow the per-band modules again."""
    model = _small_paper_band_model(("vocals",)).eval()
    x = torch.randn(2, 7, sum(model.band_split.band_features), generator=torch.Generator().manual_seed(2))

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z = model.band_split(x)
            masks = model.mask_estimators[0](z)
            assert _rel(z, model.band_split.forward_per_band(x)) <= 1e-6
            assert _rel(masks, model.mask_estimators[0].forward_per_band(z)) <= 1e-6
        return z, masks

    z0, m0 = both()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # in place under no_grad: version counters move
    z1, m1 = both()
    assert _rel(z1, z0) > 1e-3 and _rel(m1, m0) > 1e-3  # the cache did not serve the old weights
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    z2, _ = both()
    assert _rel(z2, z1) > 1e-4
    model.double()
    x = x.double()
    z3, _ = both()
    assert z3.dtype == torch.float64


def test_inference_under_autocast_and_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast gives the per-band modules' dtype and values (≤ 1e-2); the CPU inference pieces of a
    run (``CPU_INFERENCE_HIDDEN``) compute the same function as whole runs."""
    model = _small_paper_band_model(("vocals",)).eval()
    x = torch.randn(2, 9, sum(model.band_split.band_features), generator=torch.Generator().manual_seed(4))
    head = model.mask_estimators[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z, want_z = model.band_split(x), model.band_split.forward_per_band(x)
        masks, want_m = head(want_z), head.forward_per_band(want_z)
    assert z.dtype == want_z.dtype == torch.bfloat16 and masks.dtype == want_m.dtype
    assert _rel(z, want_z) <= 1e-2 and _rel(masks, want_m) <= 1e-2
    with torch.no_grad():
        whole = head(want_z.float())
        monkeypatch.setattr(bands, "CPU_INFERENCE_HIDDEN", 1)  # one band per product
        pieces = head(want_z.float())
    assert _rel(pieces, whole) <= 1e-6


def test_grouped_form_runs_on_the_meta_device() -> None:
    """FLOP counting (benchmarks/count_flops.py) runs the model on the meta device, where autocast has no
    dispatch key: asking it whether it is on must not raise there."""
    torch.manual_seed(0)
    split = BandSplit(tuple(4 * w for w in (2, 2, 4)), 8).eval().to("meta")
    with torch.no_grad():
        z = split(torch.randn(1, 5, 32, device="meta"))
    assert z.device.type == "meta" and tuple(z.shape) == (1, 5, 3, 8)
