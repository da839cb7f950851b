"""The Triton depthwise conv + SiLU with a direction per sequence (``conv_triton.conv_silu``) computes
``mamba2_pair.directional_conv_silu``, values and gradients (x, weights, biases), on strided views.

On a CPU the kernels run under Triton's interpreter in a subprocess (``TRITON_INTERPRET`` must be set before
they are defined); on a GPU (``-m gpu``) compiled, in float32 and bf16.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from interpreted import run_interpreted

from bsmamba2.model.mixers.mamba2_pair import directional_conv_silu

pytest.importorskip("triton")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(ndir: int, n: int, l: int, ch: int, dtype: torch.dtype, device: str, seed: int) -> float:
    """Worst relative error of y, dx, dw, db against the reference (float64), x a strided column slice."""
    from bsmamba2.model.mixers.conv_triton import conv_silu

    g = torch.Generator().manual_seed(seed)
    packed = torch.randn(ndir, n, l, ch + 9, generator=g).to(device=device, dtype=dtype)
    w = (0.5 * torch.randn(ndir, ch, 4, generator=g)).to(device)
    b = (0.1 * torch.randn(ndir, ch, generator=g)).to(device)
    dy = torch.randn(ndir, n, l, ch, generator=g).to(device)

    def ref_fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if ndir == 2:
            return directional_conv_silu(x, w, b)
        xp = F.pad(x[0], (0, 0, 3, 0))
        acc = b[0] + sum(xp[:, k : k + l] * w[0, :, k] for k in range(4))
        return F.silu(acc)[None]

    outs = []
    for fn, conv in ((ref_fn, lambda t: t.detach().double()), (conv_silu, lambda t: t.detach())):
        x = conv(packed)[..., 5 : 5 + ch].requires_grad_(True)  # unit channel stride, not contiguous
        ww, bb = conv(w).requires_grad_(True), conv(b).requires_grad_(True)
        y = fn(x, ww, bb)
        (y.double() * dy.double()).sum().backward()
        outs.append([y, x.grad, ww.grad, bb.grad])
    return max(_rel(got, want) for got, want in zip(outs[1], outs[0]))


CASES = [(2, 2, 1, 70), (2, 2, 5, 70), (2, 3, 40, 16), (2, 1, 100, 130), (1, 2, 37, 70)]


def _interpret() -> int:
    failures = 0
    for i, (ndir, n, l, ch) in enumerate(CASES):
        err = check(ndir, n, l, ch, torch.float32, "cpu", seed=i)
        failures += not err < 1e-5
        print(f"{'ok  ' if err < 1e-5 else 'FAIL'} ndir={ndir} n={n} l={l} ch={ch}: {err:.1e}")
    return failures


def test_conv_triton_interpreter_matches_reference() -> None:
    proc = run_interpreted(__file__, "--interpret")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok  ") == len(CASES), proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("l", [1, 62, 801])
def test_gpu_conv_matches_reference(dtype: torch.dtype, l: int) -> None:
    err = check(2, 3, l, 1280, dtype, "cuda", seed=l)
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), err


if __name__ == "__main__":
    if sys.argv[1:] == ["--interpret"]:
        torch.set_num_threads(1)
        sys.exit(1 if _interpret() else 0)
