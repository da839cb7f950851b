"""oneDNN's fused kernels (``bsmamba2.model.onednn``) compute the plain PyTorch ops they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bsmamba2.model import onednn


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _plain_linear(x: torch.Tensor, w: torch.Tensor, silu: bool) -> torch.Tensor:
    y = F.linear(x.double(), w.double())
    return F.silu(y) if silu else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("silu", [False, True])
def test_linear_is_the_product_and_its_silu(dtype: torch.dtype, silu: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 48, generator=gen).to(dtype)
    w = (0.2 * torch.randn(40, 48, generator=gen)).to(dtype)
    ref = _plain_linear(x, w, silu)
    y = onednn.linear(x, w, silu=silu)
    assert y.dtype == dtype and y.shape == (300, 40)
    assert _rel(y, ref) < (1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_conv2d_silu_is_the_depthwise_conv_and_its_silu() -> None:
    gen = torch.Generator().manual_seed(1)
    seq = torch.randn(3, 50, 24, generator=gen)  # (n, l, c): the channels-last view below
    x = seq.permute(0, 2, 1).unsqueeze(2)  # (n, c, 1, l)
    w, b = torch.randn(24, 1, 1, 4, generator=gen), torch.randn(24, generator=gen)
    ref = F.silu(F.conv2d(x.double(), w.double(), b.double(), padding=(0, 3), groups=24))
    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)):
        y = onednn.conv2d_silu(x.to(dtype), w.to(dtype), b.to(dtype), (0, 3), 24)
        assert y.dtype == dtype and y.shape == ref.shape and _rel(y, ref) < tol


def test_without_onednn_the_plain_ops_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (no oneDNN build, or switched off) is the same function; bf16 rounds SiLU's input once
    more there, float32 agrees to rounding."""
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(64, 32, generator=gen), torch.randn(16, 32, generator=gen)
    assert onednn.usable(x, w) == onednn.available()
    assert not onednn.usable(x.double(), w.double())  # float64 never goes to oneDNN
    assert not onednn.usable(x, w.bfloat16())  # nor mixed dtypes
    fused = onednn.linear(x, w, silu=True)
    monkeypatch.setattr(onednn, "ENABLED", False)
    assert not onednn.usable(x, w)
    assert _rel(onednn.linear(x, w, silu=True), fused) < 1e-6


def test_bf16_takes_the_plain_ops_where_the_cpu_has_no_bf16_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an AVX2-only CPU oneDNN's bf16 weight packing raises; there bf16 must not reach it at all, and the
    products (packed or not) still come out right."""
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(64, 32, generator=gen), torch.randn(16, 32, generator=gen)
    monkeypatch.setattr(onednn, "bf16_native", lambda: False)
    assert not onednn.usable(x.bfloat16(), w.bfloat16())
    assert onednn.usable(x, w) == onednn.available()  # float32 is unaffected
    packed = onednn.pack(w.bfloat16(), 64)
    assert packed is not None and not packed.is_mkldnn and torch.equal(packed, w.bfloat16())
    y = onednn.linear(x.bfloat16(), packed, silu=True)
    assert y.dtype == torch.bfloat16 and _rel(y, _plain_linear(x, w, True)) < 1e-2
