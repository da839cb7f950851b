"""Mamba2's CPU inference path (``mamba2_cpu``) computes ``Mamba2.forward``'s reference function."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from bsmamba2.model import onednn
from bsmamba2.model.mixers import mamba2_cpu
from bsmamba2.model.mixers.mamba2 import Mamba2
from bsmamba2.model.mixers.ssd import ssd_chunked
from bsmamba2.model.mixers.ssd_fast import ssd_fast


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _pair(seed: int, **sizes: int) -> tuple[Mamba2, Mamba2]:
    """The same random mixer twice: with the fast scan (CPU path) and with the reference scan."""
    torch.manual_seed(seed)
    kw = {"d_state": 16, "expand": 2, "headdim": 8, "chunk_size": 16, **sizes}
    fast = Mamba2(32, **kw, scan=ssd_fast)
    with torch.no_grad():  # move every parameter off its initial value (norm weights 1, D 1, ...)
        for p in fast.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = Mamba2(32, **kw, scan=ssd_chunked)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("l", [1, 5, 62, 130])
@pytest.mark.parametrize("sizes", [{}, {"ngroups": 2}, {"d_conv": 6}], ids=["base", "groups", "conv6"])
@pytest.mark.parametrize("fused", [True, False], ids=["onednn", "plain"])
def test_the_cpu_path_computes_the_reference(
    l: int, sizes: dict[str, int], fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onednn, "ENABLED", fused)
    fast, ref = _pair(l, **sizes)
    u = torch.randn(3, l, 32, generator=torch.Generator().manual_seed(l))
    with torch.inference_mode():
        assert mamba2_cpu.applies(fast, u) and not mamba2_cpu.applies(ref, u)
        assert _rel(fast.double()(u.double()), ref.double()(u.double())) < 1e-12
        fast.float(), ref.float()
        y_ref = ref(u)
        assert _rel(fast(u), y_ref) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 products, float32 statistics and states
            y = fast(u)
            y_ref16 = ref(u)
    assert y.dtype == torch.bfloat16
    assert _rel(y, y_ref) < 1e-2 and _rel(y, y_ref16) < 1e-2


@pytest.mark.parametrize("l", [62, 301])
def test_the_paper_head_layout_agrees_with_the_reference(l: int) -> None:
    """The paper's head layout (headdim 64, d_state 128, one group, expand 4) in a narrow mixer, on a band
    path (62 steps: one chunk) and a time path (several chunks, heads from slow to the paper init's fastest):
    fp32 within 1e-5 of the reference, bf16 autocast within 1e-2 of the fp32 reference and no further from
    it than 1.5x the reference's own bf16 run."""
    torch.manual_seed(l)
    kw = {"d_state": 128, "expand": 4, "headdim": 64, "chunk_size": 64}
    fast = Mamba2(64, **kw, scan=ssd_fast).eval()  # 4 heads of 64
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.05 * torch.randn_like(p))
        fast.A_log.copy_(torch.tensor([1.0, 4.0, 10.0, 16.0]).log())
        fast.dt_bias.copy_(torch.tensor([-4.0, -3.0, -2.5, -2.3]))  # Δ ≈ 0.02..0.1, as the paper's init
    ref = Mamba2(64, **kw, scan=ssd_chunked).eval()
    ref.load_state_dict(fast.state_dict())
    u = torch.randn(6, l, 64, generator=torch.Generator().manual_seed(l))
    with torch.inference_mode():
        y_ref = ref(u)
        assert _rel(fast(u), y_ref) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, y_ref16 = fast(u), ref(u)
    err, err_ref = _rel(y, y_ref), _rel(y_ref16, y_ref)
    assert err < 1e-2 and err < 1.5 * err_ref


def test_autograd_and_the_reference_scan_take_the_reference_path() -> None:
    fast, ref = _pair(0)
    u = torch.randn(2, 20, 32)
    assert not mamba2_cpu.applies(fast, u)  # grad enabled
    y = fast(u)
    assert y.requires_grad and _rel(y.detach(), ref(u).detach()) < 1e-5
    y.square().sum().backward()
    assert fast.in_proj.weight.grad is not None
    with torch.no_grad():
        assert mamba2_cpu.applies(fast, u) and not mamba2_cpu.applies(ref, u)


def test_prepared_weights_are_kept_until_a_weight_changes() -> None:
    fast, ref = _pair(1)
    u = torch.randn(2, 40, 32)
    keys = set(fast.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast(u)
        first = onednn.cached_weights(fast)
        assert first is not None and all(w.dtype == torch.bfloat16 for w in first)
        fast(u)
        assert onednn.cached_weights(fast) is first  # converted once, reused
        for m in (fast, ref):  # an in-place update (an optimizer step, load_state_dict) bumps the version
            m.out_proj.weight.mul_(0.5)
            m.norm.weight.add_(0.25)
        y = fast(u)
        assert onednn.cached_weights(fast) is not first
        assert _rel(y, ref(u)) < 1e-2
    with torch.no_grad():  # fp32 again: the bf16 copies are not used
        assert _rel(fast(u), ref(u)) < 1e-5
    assert set(fast.state_dict()) == keys
    twin = copy.deepcopy(fast)  # packed oneDNN weights are kept beside the module: it still copies, pickles
    torch.save(fast, io.BytesIO())
    with torch.no_grad():
        assert onednn.cached_weights(twin) is None and _rel(twin(u), ref(u)) < 1e-5


def test_the_channels_last_conv_is_the_official_conv() -> None:
    """conv_silu on the strided x‖B‖C columns of a projection = SiLU(conv1d(padding=K-1)[..., :l])."""
    gen = torch.Generator().manual_seed(0)
    for l, K in ((1, 4), (3, 4), (62, 4), (50, 1), (50, 6)):
        full = torch.randn(4, l, 40, generator=gen)
        xBC = full[..., 8:32]  # row stride 40
        w, b = torch.randn(24, 1, K, generator=gen), torch.randn(24, generator=gen)
        ref = F.silu(F.conv1d(xBC.transpose(1, 2), w, b, padding=K - 1, groups=24)[..., :l]).transpose(1, 2)
        out = mamba2_cpu.conv_silu(xBC, w.unsqueeze(2), b)
        assert out.shape == (4, l, 24) and out.stride(-1) == 1
        assert _rel(out, ref) < 1e-6


def test_causal_time_blocks_scan_without_factored_decays() -> None:
    """A causal model's time blocks keep bit-exact causality (tests/test_model_causal.py): no factoring."""
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model
    from bsmamba2.model.mixers.ssd_fast import ssd_fast_causal

    model = build_model(ModelConfig.tiny(causal=True), backend="fast")
    scans = [m.scan for m in model.modules() if isinstance(m, Mamba2)]
    assert scans.count(ssd_fast_causal) == model.cfg.depth  # the time blocks
    assert scans.count(ssd_fast) == 2 * model.cfg.depth  # the band blocks, both directions
    assert mamba2_cpu.causal_scan(ssd_chunked) is ssd_chunked
