"""Band split and mask heads (bsmamba2.model.bands): the run-batched layout (``forward_grouped``,
``GroupedBands``) computes the per-band modules' function, offline shapes (batch, many frames) and gradients
included, with the official parameter names unchanged."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.config import ModelConfig
from bsmamba2.model.bands import BandSplit, GroupedBands, MaskEstimator, width_runs


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
    z = split(x)
    torch.testing.assert_close(split.forward_grouped(x), z, rtol=1e-12, atol=1e-12)
    for head in heads:
        torch.testing.assert_close(head.forward_grouped(z), head(z), rtol=1e-12, atol=1e-12)
    grouped = GroupedBands(split, heads)  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(grouped.split(x), z, rtol=1e-12, atol=1e-12)
        ref = torch.stack([head(z) for head in heads], dim=1)  # (b, s, t, features)
        torch.testing.assert_close(grouped.masks(z), ref, rtol=1e-12, atol=1e-12)

    # gradients through the live parameters, as the per-band modules give them
    def grads(out: torch.Tensor) -> list[torch.Tensor]:
        params = [x, *split.parameters(), *heads[0].parameters()]
        return list(torch.autograd.grad(out.pow(2).sum(), params))

    want = grads(heads[0](split(x)))
    got = grads(heads[0].forward_grouped(split.forward_grouped(x)))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
