"""The fast plain-PyTorch SSD (the CPU default) computes the reference's function: values, states, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bsmamba2.model.mixers.ssd import resolve_backend, ssd_chunked, ssd_naive
from bsmamba2.model.mixers.ssd_fast import ssd_fast


def _inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, l, h, generator=gen, dtype=torch.float64) - 1.0)
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) * 8 + 0.5)
    B = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    return [x, dt, A, B, C, D]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("l", [1, 5, 16, 17, 62, 130])
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("g", [1, 2])
def test_matches_the_recurrence_with_states(l: int, chunk: int, g: int) -> None:
    x, dt, A, B, C, D = _inputs(2, l, 4, 3, g, 5, seed=l * 7 + chunk + g)
    S0 = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    for init in (None, S0):
        y_ref, s_ref = ssd_naive(x, dt, A, B, C, D, initial_state=init, return_final_state=True)
        y, s = ssd_fast(x, dt, A, B, C, D, chunk_size=chunk, initial_state=init, return_final_state=True)
        assert _rel(y, y_ref) < 1e-12 and _rel(s, s_ref) < 1e-12
        assert _rel(ssd_fast(x, dt, A, B, C, D, chunk_size=chunk, initial_state=init), y_ref) < 1e-12


def test_gradients_match_the_reference() -> None:
    ins = _inputs(2, 45, 4, 3, 1, 5, seed=3)
    outs = []
    for fn in (ssd_chunked, ssd_fast):
        leaves = [t.clone().requires_grad_() for t in ins]
        (fn(*leaves, chunk_size=16) * torch.linspace(-1, 1, 3, dtype=torch.float64)).sum().backward()
        outs.append([t.grad for t in leaves])
    for a, b in zip(*outs):
        assert a is not None and b is not None and _rel(a, b) < 1e-10


def test_float32_model_shapes_agree_with_the_reference() -> None:
    """The bundled model's two scans (time path: 801 frames; band path: 62 bands) in float32."""
    for b, l in ((3, 801), (40, 62)):
        ins = [t.float() for t in _inputs(b, l, 8, 32, 1, 64, seed=l)]
        assert _rel(ssd_fast(*ins, chunk_size=64), ssd_chunked(*ins, chunk_size=64)) < 1e-5


def test_auto_means_fast_off_cuda() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "fast"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
