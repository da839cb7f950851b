"""The bidirectional block as one autograd Function over Triton kernels (``mixer_triton.KernelMamba2Block``,
issue 13's fused mixer) computes the official block: output, the input's gradient and every parameter's
gradient against the eager ``BidirectionalBlock`` with the plain-PyTorch chunked scan in float64.

On a CPU the kernels run under Triton's interpreter in a subprocess (``TRITON_INTERPRET`` must be set before
they are defined), at tiny widths, float32 ≤ 1e-4 per tensor; on a GPU (``-m gpu``) at the paper's widths, in
float32 and bf16 autocast (issue 13's criteria), for 1, 62 and 801 steps and lengths that are no multiple of
the kernels' chunks, with both of the Function's save modes; and a converted official-format model through
these blocks gives the stored plain-PyTorch CPU vector.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from interpreted import run_interpreted
from test_regression import fixed_input, official_regression_checkpoint

import bsmamba2.model.mixers.mamba2 as mm
from bsmamba2.config import Mamba2Config
from bsmamba2.model.mixers.base import BlockOptions
from bsmamba2.model.mixers.ssd import backend_function, ssd_chunked

pytest.importorskip("triton")
TINY = (16, Mamba2Config(d_state=8, expand=2, headdim=8))  # dim, mixer settings: 4 heads, ch 48, E 84
PAPER = (256, Mamba2Config())  # 16 heads × 64, d_state 128, E 2320


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖; where the reference is exactly zero (A_log's gradient at one step: the decay multiplies
    the zero initial state only), ‖a‖ itself, as an absolute error."""
    ref = b.double().norm()
    return ((a.double() - b.double()).norm() / (ref if ref > 0 else 1.0)).item()


def _blocks(
    dim: int, settings: Mamba2Config, save: str, device: str
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the kernel block, the eager block on the chunked scan in float64), same weights, off initialisation."""
    torch.manual_seed(0)
    ref = mm.build_block(dim, settings, BlockOptions(scan=ssd_chunked, fused=False)).to(device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))  # off the initialisation (ones, zeros), each direction its own
    old = mm.KERNEL_BLOCKS
    try:
        mm.KERNEL_BLOCKS = save
        block = mm.build_block(dim, settings, BlockOptions(scan=backend_function("triton"), fused=True))
    finally:
        mm.KERNEL_BLOCKS = old
    from bsmamba2.model.mixers.mixer_triton import KernelMamba2Block

    assert isinstance(block, KernelMamba2Block) and block.save == save
    block.load_state_dict(ref.state_dict())
    return block.to(device), ref.double()


def _run(block: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor, autocast: bool) -> list[torch.Tensor]:
    """[output, d input, d every parameter] of ⟨block(x), dy⟩."""
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = block(x)
    (y.double() * dy.double()).sum().backward()
    assert x.grad is not None
    return [y.detach(), x.grad] + [p.grad.detach().clone() for p in block.parameters() if p.grad is not None]


def compare(
    dims: tuple[int, Mamba2Config], save: str, n: int, length: int, device: str, autocast: bool,
    x_dtype: torch.dtype = torch.float32,
) -> float:  # fmt: skip
    """Float32: the worst per-tensor relative error. bf16 autocast: the worse of the output's and all
    gradients' (concatenated) relative error. ``x_dtype``: the input's (bf16 as the dual path hands it over
    under autocast)."""
    block, ref = _blocks(*dims, save, device)
    g = torch.Generator().manual_seed(length)
    x = torch.randn(n, length, dims[0], generator=g).to(device=device, dtype=x_dtype)
    dy = torch.randn(n, length, dims[0], generator=g).to(device)
    want = _run(ref, x.double(), dy, autocast=False)
    from bsmamba2.model.mixers import mixer_triton

    calls = mixer_triton.CALLS[0]
    got = _run(block, x, dy, autocast=autocast)
    assert mixer_triton.CALLS[0] == calls + 1  # the Function ran, not the eager fallback
    assert len(got) == len(want) > 20  # every parameter got a gradient
    assert all(bool(torch.isfinite(t).all()) for t in got)
    if not autocast:
        return max(_rel(a, b) for a, b in zip(got, want))
    flat = [torch.cat([t.double().flatten() for t in o[1:]]) for o in (got, want)]
    return max(_rel(got[0], want[0]), _rel(flat[0], flat[1]))


# (save mode, n, length): one step, the single-chunk kernels (62), the chunked ones at no multiple of 64 (70)
CASES = [("all", 3, 1), ("all", 2, 62), ("all", 2, 70), ("input", 2, 70)]


def _interpret() -> int:
    failures = 0
    for save, n, length in CASES:
        err = compare(TINY, save, n, length, "cpu", autocast=False)
        failures += not err < 1e-4
        print(f"{'ok  ' if err < 1e-4 else 'FAIL'} save={save} n={n} l={length}: {err:.1e}")
    return failures


def test_kernel_block_interpreter_matches_reference() -> None:
    proc = run_interpreted(__file__, "--interpret")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok  ") == len(CASES), proc.stdout


def test_kernel_block_interpreter_other_launch_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conv kernels' launch shapes (``BSMAMBA2_MIXER_TILES``, what benchmarks/bench_mixer.py sweeps) tile the
    same function: small odd tiles, work items split across programs mid-sequence."""
    tiles = '{"conv_fwd": [16, 32, 4], "conv_dact": [16, 32, 4, 3], "conv_dx": [64, 16, 4]}'
    monkeypatch.setenv("BSMAMBA2_MIXER_TILES", tiles)
    proc = run_interpreted(__file__, "--interpret-one")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok  ") == 1, proc.stdout


def test_mixer_tiles_from_the_environment_are_checked() -> None:
    import subprocess

    code = "import bsmamba2.model.mixers.mixer_triton"
    env = dict(os.environ, BSMAMBA2_MIXER_TILES='{"conv_fwd": [16, 32]}')
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "BSMAMBA2_MIXER_TILES is not valid" in proc.stderr


def test_kernel_blocks_need_a_known_save_mode() -> None:
    old = mm.KERNEL_BLOCKS
    try:
        mm.KERNEL_BLOCKS = "some"
        with pytest.raises(ValueError, match="KERNEL_BLOCKS"):
            mm.build_block(*TINY, BlockOptions(scan=backend_function("triton"), fused=True))
    finally:
        mm.KERNEL_BLOCKS = old


@pytest.mark.parametrize("save", ["all", "input"])
@pytest.mark.parametrize("length", [1, 62, 100, 801])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_kernel_block_matches_reference(save: str, length: int, autocast: bool) -> None:
    torch.set_float32_matmul_precision("highest")
    err = compare(PAPER, save, 3, length, "cuda", autocast)
    assert err < (1e-2 if autocast else 1e-4), err


@pytest.mark.parametrize("length", [62, 801])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_kernel_block_takes_bf16_activations(length: int) -> None:
    """Under autocast the dual path hands the blocks bf16 activations: same criterion as fp32 inputs."""
    err = compare(PAPER, "all", 3, length, "cuda", autocast=True, x_dtype=torch.bfloat16)
    assert err < 1e-2, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_converted_official_model_through_kernel_blocks(tmp_path: Path) -> None:
    """test_regression's converted official model with kernel blocks on the GPU, float32: the stored output."""
    from bsmamba2.checkpoints import load_model
    from bsmamba2.model.mixers.mixer_triton import KernelMamba2Block

    torch.set_float32_matmul_precision("highest")
    path, cfg = official_regression_checkpoint(tmp_path)
    old = mm.KERNEL_BLOCKS
    try:
        mm.KERNEL_BLOCKS = "all"
        model = load_model(path, device="cuda", backend="triton", fused=True)
    finally:
        mm.KERNEL_BLOCKS = old
    assert sum(isinstance(m, KernelMamba2Block) for m in model.modules()) == 2 * cfg.depth
    x = torch.from_numpy(fixed_input(0.5, seed=5))[None].cuda()
    with torch.no_grad():
        y = model(x).cpu().double().numpy()
    ref = np.load(Path(__file__).parent / "regression" / "vectors.npz")["official_out"].astype(np.float64)
    err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    print(f"official model through kernel blocks vs stored CPU vector: {err:.2e}")
    assert err < 1e-5, err


if __name__ == "__main__":
    if sys.argv[1:] == ["--interpret"]:
        torch.set_num_threads(1)
        sys.exit(1 if _interpret() else 0)
    if sys.argv[1:] == ["--interpret-one"]:
        torch.set_num_threads(1)
        err = compare(TINY, "input", 2, 70, "cpu", autocast=False)
        print(f"{'ok  ' if err < 1e-4 else 'FAIL'} save=input n=2 l=70: {err:.1e}")
        sys.exit(0 if err < 1e-4 else 1)
