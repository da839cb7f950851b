"""The one-pass Triton norms (``norm_triton.rms_norm`` / ``gated_rms_norm``) compute ``norms.block_rms_norm`` and
``norms.gated_rms_norm``, on strided views; the eager Mamba2 block uses them only where they apply.

On a CPU the kernels run under Triton's interpreter in a subprocess (``TRITON_INTERPRET`` must be set before
they are defined; its float32 -> bf16 conversion truncates where a GPU rounds to nearest, hence bf16 errors
about twice the GPU's), and the switch (``norms.triton_norm_applies``, ``BSMAMBA2_TRITON_NORM``) is checked with
stand-in kernels; on a GPU (``-m gpu``) the kernels run compiled, and a whole small model in bf16 autocast on
the Triton backend gives the same separation with the kernels and without.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from interpreted import run_interpreted

import bsmamba2.model.dualpath as dualpath
import bsmamba2.model.mixers.mamba2 as mm
from bsmamba2.config import Mamba2Config, ModelConfig
from bsmamba2.model.mixers.base import BlockOptions
from bsmamba2.model.mixers.ssd import ssd_chunked
from bsmamba2.model.norms import (
    TRITON_NORM_ENV,
    TRITON_NORM_MAX_D,
    block_rms_norm,
    gated_rms_norm,
    prenorm_dtype,
    triton_norm_applies,
    triton_norm_eligible,
)

pytest.importorskip("triton")


def _worst_row_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest relative error of any row (..., d), in float64."""
    err = (got.double() - want.double()).norm(dim=-1)
    return (err / want.double().norm(dim=-1).clamp_min(1e-30)).max().item()


def _inputs(lead: tuple[int, ...], d: int, dtype: torch.dtype, device: str, seed: int) -> dict[str, Any]:
    """x and y as strided views (every other row of a wider tensor), z a column slice of an in_proj-like
    output, rows at scales from ~0.05 to ~20 (each row's statistic matters), a weight off its ones."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(1.5 * torch.randn(*lead, 1, generator=g))
    wide = torch.randn(*lead[:-1], 2 * lead[-1], d + 7, generator=g) * scale.repeat_interleave(2, dim=-2)
    x = wide.to(device=device, dtype=dtype)[..., ::2, 3 : 3 + d]
    zxbc = torch.randn(*lead, 2 * d + 5, generator=g).to(device=device, dtype=dtype)
    y = (torch.randn(*lead, d, generator=g) * scale).to(device=device, dtype=dtype)
    w = (1 + 0.3 * torch.randn(d, generator=g)).to(device)
    return {"x": x, "y": y, "z": zxbc[..., :d], "w": w}


def check(
    lead: tuple[int, ...],
    d: int,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    eps: float,
    device: str,
    seed: int,
) -> float:
    """Worst row error of both kernels against the reference functions in float64."""
    from bsmamba2.model.mixers.norm_triton import gated_rms_norm as gated_kernel
    from bsmamba2.model.mixers.norm_triton import rms_norm as rms_kernel

    t = _inputs(lead, d, dtype, device, seed)
    x, y, z, w = t["x"], t["y"], t["z"], t["w"]
    assert z.stride(-2) > d and x.stride(-2) > d  # views of wider tensors, read in place
    got_rms = rms_kernel(x, w, eps, out_dtype)
    got_gated = gated_kernel(y, z, w, eps)
    assert got_rms.dtype == out_dtype and got_rms.shape == x.shape
    assert got_gated.dtype == y.dtype and got_gated.shape == y.shape
    want_rms = block_rms_norm(x.double(), w.double(), eps)
    want_gated = gated_rms_norm(y.double(), z.double(), w.double(), eps)
    return max(_worst_row_rel(got_rms, want_rms), _worst_row_rel(got_gated, want_gated))


F32, BF16 = torch.float32, torch.bfloat16
# (leading axes, d, input dtype, prenorm output dtype, eps): odd row counts, widths that are and are not
# powers of two, a width that needs two rows per program, a large eps that changes the result
CASES = [
    ((3, 5), 128, F32, F32, 1e-5),
    ((1, 1), 256, F32, BF16, 1e-5),
    ((7,), 192, F32, F32, 1e-2),
    ((2, 3), 648, BF16, F32, 1e-5),
    ((3, 1), 1024, BF16, BF16, 1e-5),
    ((1, 2, 3), 256, BF16, BF16, 1e-3),
]


def _tolerance(dtype: torch.dtype, out_dtype: torch.dtype) -> float:
    return 1e-5 if dtype == out_dtype == F32 else 1e-2


def _interpret() -> int:
    failures = 0
    for i, (lead, d, dtype, out_dtype, eps) in enumerate(CASES):
        err = check(lead, d, dtype, out_dtype, eps, "cpu", seed=i)
        ok = err < _tolerance(dtype, out_dtype)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} lead={lead} d={d} {dtype}->{out_dtype} eps={eps}: {err:.1e}")
    err = check_block()
    failures += not err < 1e-5
    print(
        f"{'ok  ' if err < 1e-5 else 'FAIL'} bidirectional block, kernels against reference norms: {err:.1e}"
    )
    return failures


def test_norm_triton_interpreter_matches_reference() -> None:
    proc = run_interpreted(__file__, "--interpret")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok  ") == len(CASES) + 1, proc.stdout


# ---- where the kernels apply (CPU) ------------------------------------------------------------------------


def test_eligibility_follows_grad_dtype_width_and_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, 16)
    monkeypatch.delenv(TRITON_NORM_ENV, raising=False)
    with torch.no_grad():
        assert triton_norm_eligible(x) and triton_norm_eligible(x.bfloat16())
        assert not triton_norm_applies(x)  # a CPU tensor: the reference
        assert not triton_norm_eligible(x.double())  # the kernels reduce in float32
        assert not triton_norm_eligible(torch.randn(1, TRITON_NORM_MAX_D + 1))
        monkeypatch.setenv(TRITON_NORM_ENV, "0")
        assert not triton_norm_eligible(x)
        monkeypatch.setenv(TRITON_NORM_ENV, "1")
        assert triton_norm_eligible(x)
    assert not triton_norm_eligible(x)  # autograd on: the kernels have no backward


def test_prenorm_dtype_is_autocasts_or_float32() -> None:
    x = torch.randn(2, 4)
    assert prenorm_dtype(x) == torch.float32 and prenorm_dtype(x.bfloat16()) == torch.float32
    assert prenorm_dtype(x.double()) == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert prenorm_dtype(x) == torch.bfloat16


class _Recorder:
    """A scan (the reference) carrying norm kernels that record their calls: stand-ins that compute the
    reference, or with ``real`` the Triton ones."""

    def __init__(self, real: bool = False) -> None:
        self.calls: list[tuple[str, torch.dtype]] = []
        self.real = real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return ssd_chunked(*args, **kwargs)

    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
        self.calls.append(("rms_norm", out_dtype))
        if self.real:
            from bsmamba2.model.mixers.norm_triton import rms_norm

            return rms_norm(x, w, eps, out_dtype)
        return block_rms_norm(x, w, eps).to(out_dtype)

    def gated_rms_norm(self, y: torch.Tensor, z: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        self.calls.append(("gated_rms_norm", y.dtype))
        if self.real:
            from bsmamba2.model.mixers.norm_triton import gated_rms_norm as kernel

            return kernel(y, z, w, eps)
        return gated_rms_norm(y, z, w, eps)


def _small_block(scan: _Recorder) -> torch.nn.Module:
    """A bidirectional Mamba2 block of width 16 around ``scan``, its norm weights off their ones."""
    torch.manual_seed(0)
    block = mm.build_block(16, Mamba2Config(d_state=8, headdim=8, expand=2), BlockOptions(scan=scan))
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("norm.weight"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
    return block


def check_block() -> float:
    """A bidirectional block whose norms run the Triton kernels (the predicate without its device condition,
    so on the CPU here) against the same block on the reference norms: z reaches the gated kernel as the
    in_proj output's column slice."""
    scan = _Recorder(real=True)
    block = _small_block(scan)
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        want = block(x)
        dualpath.triton_norm_applies = triton_norm_eligible  # type: ignore[assignment]
        mm.triton_norm_applies = triton_norm_eligible  # type: ignore[assignment]
        got = block(x)
    assert len(scan.calls) == 4, scan.calls  # both directions, both norms
    return _worst_row_rel(got, want)


def test_eager_block_uses_the_kernels_only_where_they_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the predicate holds both norms go to the scan's kernels (with the right arguments); with autograd
    on, the switch off, or a CPU tensor (the real predicate), to the reference; the output is the same."""
    scan = _Recorder()
    block = _small_block(scan)
    x = torch.randn(2, 9, 16)
    monkeypatch.delenv(TRITON_NORM_ENV, raising=False)
    with torch.no_grad():
        want = block(x)
        assert scan.calls == []  # CPU tensors: the real predicate says no
        # the predicate without its device condition, so the kernels' path runs here on the CPU
        monkeypatch.setattr(dualpath, "triton_norm_applies", triton_norm_eligible)
        monkeypatch.setattr(mm, "triton_norm_applies", triton_norm_eligible)
        got = block(x)
        # both directions: prenorm then gated norm, the prenorm in float32 without autocast
        assert scan.calls == [("rms_norm", torch.float32), ("gated_rms_norm", torch.float32)] * 2
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        scan.calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            block(x)
        assert [c for c in scan.calls if c[0] == "rms_norm"] == [("rms_norm", torch.bfloat16)] * 2
        scan.calls.clear()
        monkeypatch.setenv(TRITON_NORM_ENV, "0")
        torch.testing.assert_close(block(x), want, rtol=0, atol=0)
        assert scan.calls == []
        monkeypatch.delenv(TRITON_NORM_ENV)
    block(x)  # autograd on
    assert scan.calls == []


# ---- on a GPU ---------------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("d", [256, 648, 1024, TRITON_NORM_MAX_D])
def test_gpu_norms_match_reference(dtype: torch.dtype, d: int) -> None:
    for out_dtype in (F32, BF16):
        err = check((5, 333), d, dtype, out_dtype, 1e-5, "cuda", seed=d)
        assert err < _tolerance(dtype, out_dtype), (out_dtype, err)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_gpu_model_same_with_and_without_kernels(autocast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny model on the Triton backend, in float32 or bf16 autocast: the kernels ran (counted), and the
    separation agrees with the switch-off run (float32 ≤ 1e-4, bf16 ≤ 1e-2)."""
    from bsmamba2.model import build_model
    from bsmamba2.model.mixers.ssd import backend_function

    scan = backend_function("triton")
    calls = {"rms_norm": 0, "gated_rms_norm": 0}
    for name in calls:
        kernel = getattr(scan, name)

        def counted(*args: Any, _k: Any = kernel, _n: str = name) -> torch.Tensor:
            calls[_n] += 1
            return _k(*args)

        monkeypatch.setattr(scan, name, counted)
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(dim=32, mamba2=dict(headdim=16, d_state=32))  # sizes the SSD kernels take
    model = build_model(cfg, backend="triton", device="cuda").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # the prenorms' and gated norms' weights, off their ones
                p.mul_(1 + 0.3 * torch.randn_like(p))
    x = 0.3 * torch.randn(2, cfg.audio_channels, cfg.sample_rate, device="cuda")
    torch.set_float32_matmul_precision("highest")

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return model(x).float()

    monkeypatch.setenv(TRITON_NORM_ENV, "0")
    want = run()
    assert calls == {"rms_norm": 0, "gated_rms_norm": 0}
    monkeypatch.delenv(TRITON_NORM_ENV)
    got = run()
    assert calls["rms_norm"] > 0 and calls["rms_norm"] == calls["gated_rms_norm"]
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < (1e-2 if autocast else 1e-4), rel


if __name__ == "__main__":
    if sys.argv[1:] == ["--interpret"]:
        torch.set_num_threads(1)
        sys.exit(1 if _interpret() else 0)
