"""The export-friendly SSD computes the reference's function (float64), and a model running it matches the
model on the reference backend."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.model.mixers.ssd import resolve_backend, segsum, ssd_chunked, ssd_naive
from bsmamba2.model.mixers.ssd_export import BACKEND, segsum_export, ssd_export


def _inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    A = -torch.rand(h, generator=gen, dtype=torch.float64) * 3 - 0.1
    B = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    s0 = torch.randn(b, h, p, n, generator=gen, dtype=torch.float64)
    return [x, dt, A, B, C, D, s0]


@pytest.mark.parametrize("length", [1, 7, 16, 17, 62, 64, 65, 201])
@pytest.mark.parametrize("chunk", [1, 16, 64])
def test_matches_naive_with_initial_state(length: int, chunk: int) -> None:
    x, dt, A, B, C, D, s0 = _inputs(2, length, 4, 3, 2, 5, seed=length * 100 + chunk)
    y1, f1 = ssd_naive(x, dt, A, B, C, D, initial_state=s0, return_final_state=True)
    y2, f2 = ssd_export(x, dt, A, B, C, D, chunk_size=chunk, initial_state=s0, return_final_state=True)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f2, f1, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [1, 30, 64, 100])
def test_matches_chunked_reference_without_state(length: int) -> None:
    """As Mamba2 calls it: no initial state, one group, D given; also with D omitted."""
    x, dt, A, B, C, D, _ = _inputs(3, length, 8, 4, 1, 6, seed=length)
    for d in (D, None):
        want = ssd_chunked(x, dt, A, B, C, d, chunk_size=16)
        got = ssd_export(x, dt, A, B, C, d, chunk_size=16)
        assert isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_segsum_matches_reference() -> None:
    a = torch.randn(2, 3, 9, dtype=torch.float64)
    torch.testing.assert_close(segsum_export(a), segsum(a))


def test_registered_as_a_backend() -> None:
    assert resolve_backend(BACKEND, torch.device("cpu")) == BACKEND


def test_model_on_export_backend_matches_reference() -> None:
    """A whole tiny model (time pass over 70 frames, band pass over 18 bands) gives the same stems."""
    torch.manual_seed(0)
    ref = build_model(ModelConfig.tiny(), backend="chunked").eval()
    exp = build_model(ModelConfig.tiny(), backend=BACKEND).eval()
    exp.load_state_dict(ref.state_dict())
    wave = torch.randn(2, 2, 64 * 69)
    with torch.no_grad():
        torch.testing.assert_close(exp(wave), ref(wave), rtol=1e-5, atol=1e-6)
