"""The sequence-mixer interface and registry: registered names, streaming (whole sequence = pieces), refusals."""

from __future__ import annotations

import pytest
import torch

import bsmamba2.model.mixers.mamba2 as mm
from bsmamba2.config import MIXERS, Mamba2Config, RoFormerConfig
from bsmamba2.model.dualpath import PreNormBlock
from bsmamba2.model.mixers.base import BlockOptions, NotStreamableError
from bsmamba2.model.mixers.registry import get_mixer, register_mixer, registered_mixers
from bsmamba2.model.mixers.roformer import RoFormerBlock
from bsmamba2.model.mixers.ssd import ssd_chunked, ssd_naive


def test_registry_matches_the_config_sections() -> None:
    assert registered_mixers() == MIXERS == ("mamba2", "roformer")
    assert get_mixer("mamba2").settings_cls is Mamba2Config
    assert get_mixer("roformer").settings_cls is RoFormerConfig
    with pytest.raises(ValueError, match="unknown mixer 'lstm'"):
        get_mixer("lstm")
    with pytest.raises(ValueError, match="registered already"):
        register_mixer("mamba2", Mamba2Config, get_mixer("mamba2").build_block)
    with pytest.raises(ValueError, match="MIXER_SETTINGS must map it"):
        register_mixer("lstm", Mamba2Config, get_mixer("mamba2").build_block)


def test_blocks_come_from_the_registered_builder() -> None:
    block = get_mixer("roformer").build_block(8, RoFormerConfig(heads=2, dim_head=4), BlockOptions())
    assert isinstance(block, RoFormerBlock) and block.attn.heads == 2
    bi = get_mixer("mamba2").build_block(8, Mamba2Config(d_state=4, expand=2, headdim=4), BlockOptions())
    mixer = bi.forward_blocks[0].mixer
    assert isinstance(mixer, mm.Mamba2) and (mixer.d_state, mixer.nheads) == (4, 4)
    assert mixer.scan is ssd_chunked


def _mamba(seed: int, scan=ssd_chunked, **sizes: int) -> mm.Mamba2:
    torch.manual_seed(seed)
    m = mm.Mamba2(
        8, **{"d_state": 4, "expand": 2, "headdim": 4, "chunk_size": 5, **sizes}, scan=scan
    ).double()
    with torch.no_grad():  # move every parameter off its initial value (norm weights 1, D 1, ...)
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _pieces(length: int, gen: torch.Generator) -> list[int]:
    """Random piece lengths summing to ``length``: some of one step, the rest up to 2.5 chunks long."""
    out: list[int] = []
    while sum(out) < length:
        n = 1 if torch.rand((), generator=gen) < 0.3 else int(torch.randint(2, 13, (), generator=gen))
        out.append(min(n, length - sum(out)))
    return out


def _run_in_pieces(block: torch.nn.Module, x: torch.Tensor, pieces: list[int]) -> torch.Tensor:
    state = block.init_state(x.shape[0], x.device, x.dtype)
    ys, t = [], 0
    for n in pieces:
        y, state = block.step(x[:, t : t + n], state)
        assert y.shape == (x.shape[0], n, x.shape[2])
        ys.append(y)
        t += n
    return torch.cat(ys, dim=1)


@pytest.mark.parametrize(
    "sizes", [{}, {"ngroups": 2}, {"d_conv": 1}, {"d_conv": 6}], ids=["base", "groups", "conv1", "conv6"]
)
@pytest.mark.parametrize("scan", [ssd_chunked, ssd_naive], ids=["chunked", "naive"])
def test_mamba2_whole_equals_pieces_float64(sizes: dict[str, int], scan) -> None:
    m = _mamba(0, scan=scan, **sizes)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 37, 8, generator=gen, dtype=torch.float64)  # 37: not a multiple of the chunk (5)
    whole = m(x)
    for pieces in ([1] * 37, [1, 1, 1, 1, 7, 26], _pieces(37, gen), _pieces(37, gen)):
        torch.testing.assert_close(_run_in_pieces(m, x, pieces), whole, rtol=1e-11, atol=1e-12)


def test_mamba2_state_layout() -> None:
    m = _mamba(0, d_conv=4, ngroups=2)
    state = m.init_state(2)
    conv_dim = m.d_inner + 2 * m.ngroups * m.d_state
    assert state.conv.shape == (2, 3, conv_dim) and state.ssm.shape == (2, m.nheads, m.headdim, m.d_state)
    assert state.conv.dtype == torch.float64 and not state.conv.any() and not state.ssm.any()
    f32 = m.init_state(1, dtype=torch.bfloat16)
    assert f32.conv.dtype == torch.bfloat16 and f32.ssm.dtype == torch.float32  # the SSM state accumulates
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    _, after = m.step(x, state)
    # the conv tail is the last d_conv - 1 pre-convolution inputs x‖B‖C of the piece
    z_xbc_dt = m.in_proj(x)
    xbc = z_xbc_dt[..., m.d_inner : m.d_inner + conv_dim]
    torch.testing.assert_close(after.conv, xbc[:, -3:])
    assert after.ssm.abs().sum() > 0


def test_a_state_carries_history() -> None:
    """A second piece run from the first piece's state differs from the same piece run from zeros."""
    m = _mamba(2)
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    _, state = m.step(x[:, :6], m.init_state(1))
    y_carried, _ = m.step(x[:, 6:], state)
    y_fresh, _ = m.step(x[:, 6:], m.init_state(1))
    assert (y_carried - y_fresh).abs().max() > 1e-6


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_prenorm_block_streams_like_its_forward(fused: bool) -> None:
    cls = mm.FusedMamba2Block if fused else PreNormBlock
    block = cls(8, _mamba(3))
    block.norm.double()
    with torch.no_grad():
        block.norm.weight.add_(0.1 * torch.randn(8, dtype=torch.float64))
    assert block.streamable
    x = torch.randn(2, 23, 8, dtype=torch.float64)
    whole = PreNormBlock.forward(block, x)  # the eager forward (the fused one needs torch.compile)
    got = _run_in_pieces(block, x, [1, 1, 6, 10, 5])
    torch.testing.assert_close(got, whole, rtol=1e-11, atol=1e-12)


def test_roformer_says_it_cannot_stream() -> None:
    block = RoFormerBlock(8, heads=2, dim_head=4)
    assert not block.streamable
    with pytest.raises(NotStreamableError, match="RoFormerBlock cannot run step by step"):
        block.init_state(1)
    with pytest.raises(NotStreamableError, match="cannot run step by step"):
        block.step(torch.zeros(1, 3, 8), None)
    assert not PreNormBlock(8, block).streamable  # a block is as streamable as its mixer


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_gpu_triton_scan_streams() -> None:
    """The fused kernels' initial/final states carry a sequence across pieces like the reference (float32)."""
    from bsmamba2.model.mixers.ssd import backend_function, resolve_backend

    torch.set_float32_matmul_precision("highest")
    scan = backend_function(resolve_backend("triton", torch.device("cuda")))
    m = mm.Mamba2(64, d_state=64, expand=2, headdim=32, scan=scan).cuda()
    x = torch.randn(4, 150, 64, device="cuda")
    whole = m(x)
    got = _run_in_pieces(m, x, [1, 63, 64, 1, 21])
    assert ((got - whole).norm() / whole.norm()).item() < 1e-4


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("l", [1, 62, 801])
def test_gpu_triton_inference_matches_reference(l: int) -> None:
    """Mamba2 inference on the Triton backend (its conv + SiLU kernel and the fused scan) against the
    plain-PyTorch reference (torch's conv, the chunked scan) in float32: ≤ 1e-4 in float32, ≤ 1e-2 under bf16
    autocast."""
    from bsmamba2.model.mixers.ssd import backend_function, resolve_backend

    torch.set_float32_matmul_precision("highest")
    triton_scan = backend_function(resolve_backend("triton", torch.device("cuda")))
    fast = mm.Mamba2(64, d_state=64, expand=2, headdim=32, scan=triton_scan).cuda()
    ref = mm.Mamba2(64, d_state=64, expand=2, headdim=32, scan=ssd_chunked).cuda()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, l, 64, device="cuda")
    with torch.no_grad():
        want = ref(x)
        got = fast(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got_bf16 = fast(x).float()
    assert ((got - want).norm() / want.norm()).item() <= 1e-4
    assert ((got_bf16 - want).norm() / want.norm()).item() <= 1e-2
