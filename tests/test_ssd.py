"""The two plain-PyTorch SSD forms agree (values, final states, gradients) in float64; the backend registry."""

import pytest
import torch

from bsmamba2.device import BACKEND_HELP, BACKENDS
from bsmamba2.errors import UserError
from bsmamba2.model.mixers.ssd import (
    USER_BACKENDS,
    backend_function,
    resolve_backend,
    segsum,
    ssd,
    ssd_chunked,
    ssd_naive,
    ssd_recurrent,
)


def _inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    A = -torch.rand(h, generator=gen, dtype=torch.float64) * 3 - 0.1
    B = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    s0 = torch.randn(b, h, p, n, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, s0)]


@pytest.mark.parametrize("length", [1, 7, 62, 64, 65, 801])
@pytest.mark.parametrize("chunk", [1, 16, 64, 256])
def test_chunked_matches_naive(length: int, chunk: int) -> None:
    if length == 801 and chunk == 1:
        pytest.skip("801 chunks of one step: covered by the other chunk sizes")
    ins = _inputs(2, length, 4, 3, 2, 5, seed=length * 1000 + chunk)
    x, dt, A, B, C, D, s0 = ins
    y1, f1 = ssd_naive(x, dt, A, B, C, D, initial_state=s0, return_final_state=True)
    y2, f2 = ssd_chunked(x, dt, A, B, C, D, chunk_size=chunk, initial_state=s0, return_final_state=True)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f2, f1, rtol=1e-10, atol=1e-10)
    # Gradients of a random functional of both outputs, w.r.t. every input.
    gen = torch.Generator().manual_seed(1)
    wy, wf = (
        torch.randn(y1.shape, generator=gen, dtype=torch.float64),
        torch.randn(f1.shape, generator=gen, dtype=torch.float64),
    )
    g1 = torch.autograd.grad((y1 * wy).sum() + (f1 * wf).sum(), ins)
    g2 = torch.autograd.grad((y2 * wy).sum() + (f2 * wf).sum(), ins)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


def test_recurrence_definition_by_hand() -> None:
    """One head, scalar state: y_t = sum_j exp(A·(dt_{j+1}+...+dt_t))·dt_j·x_j·B_j·C_t + D·x_t."""
    l = 5
    x = torch.randn(1, l, 1, 1, dtype=torch.float64)
    dt = torch.rand(1, l, 1, dtype=torch.float64) + 0.1
    A = torch.tensor([-0.7], dtype=torch.float64)
    B = torch.randn(1, l, 1, 1, dtype=torch.float64)
    C = torch.randn(1, l, 1, 1, dtype=torch.float64)
    D = torch.tensor([0.3], dtype=torch.float64)
    expected = torch.zeros(l, dtype=torch.float64)
    for t in range(l):
        for j in range(t + 1):
            decay = torch.exp(A * dt[0, j + 1 : t + 1, 0].sum())
            expected[t] += (decay * dt[0, j, 0] * x[0, j, 0, 0] * B[0, j, 0, 0] * C[0, t, 0, 0]).item()
        expected[t] += (D * x[0, t, 0, 0]).item()
    y = ssd_naive(x, dt, A, B, C, D)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y[0, :, 0, 0], expected)


def test_segsum() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    s = segsum(a)
    assert s[2, 0] == 5.0 and s[2, 2] == 0.0 and s[1, 0] == 2.0
    assert torch.isinf(s[0, 1]) and s[0, 1] < 0


def test_backend_selection_is_explicit() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "fast"
    assert resolve_backend("auto") == "fast"  # device not known yet: the portable fast path
    assert resolve_backend("naive", cpu) == "naive"
    assert resolve_backend("chunked", cpu) == "torch"  # the reference's earlier name
    with pytest.raises(UserError, match="unknown SSD backend 'nope'; choose from auto, torch, fast, triton"):
        resolve_backend("nope", cpu)
    with pytest.raises(ValueError, match="unknown SSD backend"):  # also a ValueError, for older callers
        resolve_backend("nope", cpu)
    assert backend_function("torch") is ssd_chunked and backend_function("naive") is ssd_naive
    x, dt, A, B, C, D, _ = (t.detach() for t in _inputs(1, 9, 2, 2, 1, 3, seed=0))
    torch.testing.assert_close(
        ssd(x, dt, A, B, C, D, backend="naive"), ssd(x, dt, A, B, C, D, backend="torch", chunk_size=4)
    )


def test_triton_backend_is_cuda_only_or_missing() -> None:
    """On a CPU tensor the fused kernels are refused by name, whether Triton is installed or not."""
    with pytest.raises(UserError, match="SSD backend 'triton'"):
        resolve_backend("triton", torch.device("cpu"))


def test_user_facing_names_come_from_the_registry() -> None:
    assert USER_BACKENDS == BACKENDS == ("auto", "torch", "fast", "triton")
    for name in USER_BACKENDS:
        assert f"{name} (" in BACKEND_HELP


@pytest.mark.parametrize("length", [0, 1, 3, 9])
def test_recurrent_matches_naive(length: int) -> None:
    """The streaming recurrence (few passes over the state, groups broadcast) is the definition."""
    x, dt, A, B, C, D, s0 = (t.detach() for t in _inputs(2, length, 4, 3, 2, 5, seed=length))
    y1, f1 = ssd_naive(x, dt, A, B, C, D, initial_state=s0, return_final_state=True)
    y2, f2 = ssd_recurrent(x, dt, A, B, C, D, initial_state=s0, return_final_state=True)
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f2, f1, rtol=1e-12, atol=1e-12)
    assert torch.equal(f2, s0) == (length == 0)  # the initial state is neither ignored nor changed in place
    assert torch.equal(s0, _inputs(2, length, 4, 3, 2, 5, seed=length)[6].detach())

    s1 = s0.clone()
    y3, f3 = ssd_recurrent(x, dt, A, B, C, D, initial_state=s1, return_final_state=True, inplace=True)
    torch.testing.assert_close(y3, y1, rtol=1e-12, atol=1e-12)
    assert f3 is s1 and torch.equal(f3, f2)  # inplace: the state tensor itself carries the result
