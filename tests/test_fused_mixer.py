"""The fused Mamba2 block (``FusedMamba2Block``: torch.compile of the work around the scan) computes the same
function as the eager prenorm block, with the same parameters.

* CPU: a model built with ``fused=True`` has the eager model's parameter names and shapes; with the module-free
  forms ``block_in`` / ``block_out`` (what gets compiled) standing in for their compiled versions it equals the
  eager model in float64, outputs and every parameter gradient; the causal conv written as shifted multiply-adds equals
  ``nn.Conv1d(padding=K-1)[..., :l]``.
* GPU (``-m gpu``): the compiled graphs with the Triton scan agree with the eager reference in float32 and under
  bf16 autocast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bsmamba2.model.mixers.mamba2 as mm
import bsmamba2.model.mixers.mamba2_glue as glue
from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.model.dualpath import PreNormBlock
from bsmamba2.model.mixers import mamba2_pair


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _run(model: torch.nn.Module, wave: torch.Tensor) -> list[torch.Tensor]:
    y = model(wave)
    (y * torch.linspace(-1, 1, y.shape[-1], device=y.device, dtype=y.dtype)).sum().backward()
    return [y.detach()] + [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def test_shifted_conv_equals_conv1d() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(12, 12, 4, groups=12, padding=3).double()
    x = torch.randn(3, 9, 12, dtype=torch.float64)  # (b, l, ch)
    ref = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    in_w = torch.cat([torch.eye(12), torch.eye(12), torch.zeros(1, 12)]).double()
    z, xbc, dt = glue.mixer_in(
        x, in_w, conv.weight, conv.bias, torch.zeros(1, dtype=torch.float64), (12, 0, 1)
    )
    assert torch.equal(z, x)
    assert _rel(xbc, F.silu(ref)) < 1e-14
    assert _rel(dt, F.softplus(torch.zeros(3, 9, 1, dtype=torch.float64))) < 1e-14


def _fused_copy(ref: torch.nn.Module, cfg: ModelConfig, **kwargs: object) -> torch.nn.Module:
    """The same model built with fused blocks, holding ``ref``'s weights."""
    fused = build_model(cfg, fused=True, **kwargs).to(next(ref.parameters()).dtype)  # type: ignore[arg-type]
    fused.load_state_dict(ref.state_dict())  # strict: the same names and shapes
    return fused


def test_fused_build_keeps_the_parameters() -> None:
    cfg = ModelConfig.tiny(depth=2)
    eager, fused = build_model(cfg), build_model(cfg, fused=True)
    shapes = {k: v.shape for k, v in eager.state_dict().items()}
    assert {k: v.shape for k, v in fused.state_dict().items()} == shapes
    blocks = [m for m in fused.modules() if isinstance(m, PreNormBlock)]
    assert len(blocks) == 4 * cfg.depth and all(isinstance(m, mm.FusedMamba2Block) for m in blocks)
    assert not any(isinstance(m, mm.FusedMamba2Block) for m in eager.modules())
    # fused=True is ignored by a mixer without a fused form
    roformer = ModelConfig.tiny(mixer="roformer")
    assert build_model(roformer, fused=True).state_dict().keys() == build_model(roformer).state_dict().keys()


def _uncompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module-free functions stand in for their compiled versions: checks the math, not the compiler."""
    monkeypatch.setitem(glue.COMPILED, "in", glue.block_in)
    monkeypatch.setitem(glue.COMPILED, "out", glue.block_out)
    monkeypatch.setitem(glue.COMPILED, "pair_in", glue.pair_in)
    monkeypatch.setitem(glue.COMPILED, "pair_out", glue.pair_out)


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "two-blocks"])
def test_functional_forms_match_module_float64(monkeypatch: pytest.MonkeyPatch, paired: bool) -> None:
    """Both fused forms (directions stacked in one ``PairedMamba2Block``, or two ``FusedMamba2Block`` calls
    on flipped copies) equal the eager model: outputs and every parameter gradient."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    ref = build_model(cfg, backend="torch").double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move off the initialisation (ones, zeros)
    _uncompiled(monkeypatch)
    monkeypatch.setattr(mm, "PAIR_DIRECTIONS", paired)
    fused = _fused_copy(ref, cfg)
    assert any(isinstance(m, mm.PairedMamba2Block) for m in fused.modules()) == paired
    wave = 0.1 * torch.randn(2, 2, 9000, dtype=torch.float64)
    a, b = _run(ref, wave), _run(fused, wave)
    assert len(a) == len(b) > 10
    for x, y in zip(a, b):
        assert _rel(y, x) < 1e-12


def test_directional_conv_is_the_flipped_causal_conv() -> None:
    """Direction 1 of ``directional_conv_silu`` is the causal conv of the flipped sequence, flipped back."""
    torch.manual_seed(1)
    convs = [torch.nn.Conv1d(6, 6, 4, groups=6, padding=3).double() for _ in range(2)]
    x = torch.randn(2, 3, 11, 6, dtype=torch.float64)  # (two, n, l, ch)
    got = mamba2_pair.directional_conv_silu(
        x, torch.stack([c.weight[:, 0] for c in convs]), torch.stack([c.bias for c in convs])
    )
    fwd = F.silu(convs[0](x[0].transpose(1, 2))[..., :11].transpose(1, 2))
    bwd = F.silu(convs[1](x[1].flip(1).transpose(1, 2))[..., :11].transpose(1, 2)).flip(1)
    assert _rel(got[0], fwd) < 1e-14 and _rel(got[1], bwd) < 1e-14


def test_paired_block_with_triton_interpreter() -> None:
    """The paired block through the Triton kernels' both-directions launch (interpreter, float32) equals the
    eager model on the reference scan: the stacked batch, strided views and reversed indexing reach the
    kernels correctly (time path chunked, band path single-chunk)."""
    pytest.importorskip("triton")
    from interpreted import run_interpreted

    proc = run_interpreted(__file__, "--paired-interpret")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("paired ok") == 2, proc.stdout


def _paired_interpret() -> None:
    """Subprocess body of ``test_paired_block_with_triton_interpreter`` (TRITON_INTERPRET=1 already set)."""
    torch.set_num_threads(1)
    for name, fn in (
        ("in", glue.block_in),
        ("out", glue.block_out),
        ("pair_in", glue.pair_in),
        ("pair_out", glue.pair_out),
    ):
        glue.COMPILED[name] = fn
    mm.PAIR_DIRECTIONS = True  # the paired block is opt-in
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(dim=16, depth=1, mamba2=dict(headdim=8, d_state=16))
    ref = build_model(cfg, backend="torch")
    # 35 frames: three time-path chunks of 16 (the last one partial); the interpreter's cost follows the
    # number of kernel programs, so no longer than that
    wave = 0.1 * torch.randn(1, cfg.audio_channels, 2200)
    a = _run(ref, wave)
    for triton_conv in (False, True):  # the conv inside the compiled graph, or conv_triton's kernel
        mm.TRITON_CONV = triton_conv
        fused = _fused_copy(ref, cfg, backend="triton")
        assert any(isinstance(m, mm.PairedMamba2Block) for m in fused.modules())
        b = _run(fused, wave)
        worst = max(_rel(y, x) for x, y in zip(a, b))
        assert len(a) == len(b) > 10 and worst < 1e-4, worst
        print(f"paired ok (triton conv {triton_conv}): {len(a)} tensors, worst {worst:.1e}")


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_gpu_compiled_fused_matches_eager(autocast: bool) -> None:
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(dim=32, mamba2=dict(headdim=16, d_state=32))
    ref = build_model(cfg, backend="triton", device="cuda")
    fused = _fused_copy(ref, cfg, backend="triton", device="cuda")
    wave = 0.1 * torch.randn(2, cfg.audio_channels, cfg.sample_rate, device="cuda")
    outs = []
    for m in (ref, fused):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            outs.append(_run(m, wave))
    if not autocast:
        for x, y in zip(outs[0], outs[1]):
            assert _rel(y, x) < 1e-4
        return
    # bf16: output and all gradients together within 1e-2 (issue #5's criterion); a tiny tensor (4 values of
    # a cancelling sum) may differ more on its own, so single tensors get 5e-2
    assert _rel(outs[1][0], outs[0][0]) < 1e-2
    flat = [torch.cat([t.flatten() for t in o[1:]]) for o in outs]
    assert _rel(flat[1], flat[0]) < 1e-2
    for x, y in zip(outs[0], outs[1]):
        assert _rel(y, x) < 5e-2


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--paired-interpret"]:
        _paired_interpret()
