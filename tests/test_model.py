"""BandSplitSeparator: parameter counts, structure, axis discipline, shapes, and the official semantics."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from bsmamba2.checkpoints import load_model, save_model
from bsmamba2.config import PAPER_BAND_WIDTHS, Mamba2Config, ModelConfig
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.model.dualpath import BidirectionalBlock, PreNormBlock, band_pass, time_pass
from bsmamba2.model.mixers.mamba2 import Mamba2
from bsmamba2.model.mixers.roformer import RoFormerBlock


def _count(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


def test_paper_parameter_count() -> None:
    """48,098,188 = OFFICIAL_SPEC §1.8 (paper Table I: 48.1M); the baseline ~72.2M (±4 %)."""
    assert _count(ModelConfig.paper()) == 48_098_188
    assert abs(_count(ModelConfig.roformer_paper()) / 72.2e6 - 1) < 0.04


def test_paper_bands() -> None:
    assert len(PAPER_BAND_WIDTHS) == 62 and sum(PAPER_BAND_WIDTHS) == 1025


def test_official_state_dict_names() -> None:
    with torch.device("meta"):
        sd = build_model(ModelConfig.paper()).state_dict()
    assert len(sd) == 675
    p = "layers.5.1.backward_blocks.0"
    assert sd[f"{p}.mixer.in_proj.weight"].shape == (2320, 256)
    assert sd[f"{p}.mixer.conv1d.weight"].shape == (1280, 1, 4)
    assert sd[f"{p}.mixer.A_log"].shape == (16,)
    assert sd[f"{p}.norm.weight"].shape == (256,)
    assert sd["layers.0.0.linear.weight"].shape == (256, 512)
    assert sd["band_split.to_features.61.0.gamma"].shape == (4 * 129,)
    assert sd["mask_estimators.0.to_freqs.0.0.2.weight"].shape == (16, 1024)
    assert sd["final_norm.gamma"].shape == (256,)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="band widths"):
        ModelConfig(band_widths=(1, 2, 3))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(dim=20, mamba2=Mamba2Config(expand=1, headdim=64))
    with pytest.raises(ValueError, match="mixer"):
        ModelConfig(mixer="lstm")
    cfg = ModelConfig.tiny(stems=("vocals", "drums"))
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def _tiny_mamba(dim: int = 8) -> Mamba2:
    return Mamba2(dim, d_state=4, expand=2, headdim=4, chunk_size=4)


def _tiny_bimamba(dim: int = 8) -> BidirectionalBlock:
    return BidirectionalBlock(dim, lambda: PreNormBlock(dim, _tiny_mamba(dim)))


def test_bidirectional_symmetry() -> None:
    """Swapping forward/backward weights (and the merge halves) and reversing the input reverses the output."""
    torch.manual_seed(0)
    block = _tiny_bimamba(8)
    swapped = copy.deepcopy(block)
    swapped.forward_blocks.load_state_dict(block.backward_blocks.state_dict())
    swapped.backward_blocks.load_state_dict(block.forward_blocks.state_dict())
    with torch.no_grad():
        w = block.linear.weight  # (d, 2d): [forward half | backward half]
        swapped.linear.weight.copy_(torch.cat([w[:, 8:], w[:, :8]], dim=1))
    x = torch.randn(3, 11, 8)
    torch.testing.assert_close(swapped(x.flip(1)), block(x).flip(1), rtol=1e-5, atol=1e-5)
    # and the block is not trivially symmetric: without the swap the results differ
    assert not torch.allclose(block(x.flip(1)), block(x).flip(1), atol=1e-4)


@pytest.mark.parametrize("mixer", ["mamba2", "roformer"])
def test_axis_leakage(mixer: str) -> None:
    torch.manual_seed(0)
    block = _tiny_bimamba(8) if mixer == "mamba2" else RoFormerBlock(8, heads=2, dim_head=4)
    z = torch.randn(2, 9, 5, 8)  # (b, t, k, d)
    # time pass: perturb band 3 at every frame -> only band 3 changes
    dz = torch.zeros_like(z)
    dz[:, :, 3] = torch.randn(2, 9, 8)
    diff = (time_pass(z + dz, block) - time_pass(z, block)).abs().amax(dim=(0, 1, 3))  # per band
    assert diff[3] > 1e-3 and torch.all(diff[[0, 1, 2, 4]] == 0)
    # band pass: perturb frame 6 in every band -> only frame 6 changes
    dz = torch.zeros_like(z)
    dz[:, 6] = torch.randn(2, 5, 8)
    diff = (band_pass(z + dz, block) - band_pass(z, block)).abs().amax(dim=(0, 2, 3))  # per frame
    assert diff[6] > 1e-3 and torch.all(diff[torch.arange(9) != 6] == 0)


def test_feature_folding_order() -> None:
    """Feature index 4f + 2c + r (OFFICIAL_SPEC §1.2): perturbing bin f of channel c reaches only its band."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    model = build_model(cfg).eval()
    X = torch.randn(1, 2, cfg.n_bins, 6, dtype=torch.complex64)
    x = rearrange(torch.view_as_real(X), "b c f t r -> b t (f c r)")
    f, c = 37, 1
    assert x[0, 2, 4 * f + 2 * c + 1] == X[0, c, f, 2].imag
    z0 = model.band_split(x)
    x2 = x.clone()
    x2[..., 4 * f + 2 * c] += 1.0
    changed = (model.band_split(x2) - z0).abs().amax(dim=(0, 1, 3))  # per band
    starts = [sum(cfg.band_widths[:k]) for k in range(cfg.num_bands)]
    band = max(k for k, s in enumerate(starts) if s <= f)
    assert changed[band] > 0 and torch.count_nonzero(changed) == 1


@pytest.mark.parametrize("mixer", ["mamba2", "roformer"])
@pytest.mark.parametrize("channels,stems", [(2, ("vocals",)), (1, ("vocals", "drums", "bass", "other"))])
def test_forward_shapes(mixer: str, channels: int, stems: tuple[str, ...]) -> None:
    cfg = ModelConfig.tiny(mixer=mixer, audio_channels=channels, stems=stems, n_fft=512, hop_length=256)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for n in (1, 63, 64, 1000, 44100 * 16):
            y = model(torch.randn(1, channels, n))
            assert y.shape == (1, len(stems), channels, n)
            assert torch.isfinite(y).all()


def test_silence_gives_finite_output() -> None:
    model = build_model(ModelConfig.tiny()).eval()
    with torch.no_grad():
        y = model(torch.zeros(2, 2, 5000))
    assert torch.isfinite(y).all() and y.abs().max() == 0  # the mask multiplies a zero spectrogram


def test_wrong_channels_rejected() -> None:
    model = build_model(ModelConfig.tiny())
    with pytest.raises(ValueError, match="expected a waveform"):
        model(torch.randn(1, 3, 1000))


def test_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(stems=("vocals", "other"))).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.cfg == model.cfg
    x = torch.randn(1, 2, 3000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.part"))


def _mamba2_reference(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """OFFICIAL_SPEC §1.6, written step by step for one sequence u (l, d_model) in float64."""
    W = {k: v.detach().double() for k, v in m.state_dict().items()}
    u = u.double()
    l = u.shape[0]
    di, n, h, p = m.d_inner, m.d_state, m.nheads, m.headdim
    proj = u @ W["in_proj.weight"].T
    z, xbc, dt = proj[:, :di], proj[:, di : 2 * di + 2 * n], proj[:, 2 * di + 2 * n :]
    conv = torch.zeros_like(xbc)
    w, bias = W["conv1d.weight"][:, 0], W["conv1d.bias"]  # (channels, 4)
    for t in range(l):
        acc = bias.clone()
        for j in range(4):
            if t - 3 + j >= 0:
                acc += w[:, j] * xbc[t - 3 + j]
        conv[t] = F.silu(acc)
    x, B, C = conv[:, :di], conv[:, di : di + n], conv[:, di + n :]
    delta = F.softplus(dt + W["dt_bias"])
    A = -torch.exp(W["A_log"])
    y = torch.zeros(l, di, dtype=torch.float64)
    for hh in range(h):
        S = torch.zeros(p, n, dtype=torch.float64)
        for t in range(l):
            xt = x[t, hh * p : (hh + 1) * p]
            S = torch.exp(delta[t, hh] * A[hh]) * S + delta[t, hh] * torch.outer(xt, B[t])
            y[t, hh * p : (hh + 1) * p] = S @ C[t] + W["D"][hh] * xt
    g = y * F.silu(z)
    g = g / torch.sqrt((g**2).mean(-1, keepdim=True) + 1e-5) * W["norm.weight"]
    return g @ W["out_proj.weight"].T


def test_mamba2_matches_spec_reference() -> None:
    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, expand=2, headdim=8, chunk_size=4).double()
    with torch.no_grad():  # move every parameter off its initial value so nothing is trivially 1 or 0
        for prm in m.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    u = torch.randn(1, 13, 16, dtype=torch.float64)
    torch.testing.assert_close(m(u)[0], _mamba2_reference(m, u[0]), rtol=1e-9, atol=1e-9)


def test_bimamba_block_formula() -> None:
    """y = x + Linear([x + M_f(N_f(x)) ; flip(x' + M_b(N_b(x')))]) with N = x·(mean(x²)+1e-5)^-½·w (§1.5)."""
    torch.manual_seed(0)
    blk = _tiny_bimamba(8)
    x = torch.randn(2, 7, 8)

    def norm(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    fb, bb = blk.forward_blocks[0], blk.backward_blocks[0]
    f = x + fb.mixer(norm(x, fb.norm.weight))
    xr = x.flip(1)
    b = (xr + bb.mixer(norm(xr, bb.norm.weight))).flip(1)
    expected = x + torch.cat([f, b], -1) @ blk.linear.weight.T + blk.linear.bias
    torch.testing.assert_close(blk(x), expected, rtol=1e-5, atol=1e-5)


def test_mamba2_init_ranges() -> None:
    m = Mamba2(256)
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16 and m.A_log.shape == (16,)
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert torch.all(m.D == 1) and torch.all(m.norm.weight == 1)
    assert math.isclose(m.in_proj.weight.shape[0], 2320)


def test_recompute_gives_same_gradients() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(depth=2)).train()
    x = torch.randn(1, 2, 2000)

    def grads(recompute: bool) -> list[torch.Tensor]:
        model.recompute = recompute
        model.zero_grad()
        model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_build_model_resolves_the_backend_once() -> None:
    cfg = ModelConfig.tiny()
    model = build_model(cfg, device="cpu")
    assert model.backend == "fast" and next(model.parameters()).device.type == "cpu"
    mixers = [m for m in model.modules() if isinstance(m, Mamba2)]
    assert len(mixers) == 4 * cfg.depth and all(m.scan is mixers[0].scan for m in mixers)
    assert build_model(cfg, backend="naive").backend == "naive"
    with pytest.raises(UserError, match="unknown SSD backend 'nope'"):
        build_model(cfg, backend="nope")
    with pytest.raises(UserError, match="SSD backend 'triton'"):  # needs CUDA (or is not installed)
        build_model(cfg, backend="triton", device="cpu")
    # the backend is checked for every mixer, used only by those with an SSD
    assert build_model(ModelConfig.tiny(mixer="roformer"), backend="torch").backend == "torch"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_model_on_a_second_gpu_runs_its_kernels_there() -> None:
    """A model on cuda:1 while cuda:0 is current (``--device cuda:1``) gives what the same model gives on
    cuda:0: its Triton kernels run on the GPU that holds the tensors."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(dim=32, mamba2=dict(headdim=16, d_state=32))
    model = build_model(cfg, backend="triton", device="cuda:0").eval()
    x = 0.3 * torch.randn(2, cfg.audio_channels, cfg.sample_rate, device="cuda:0")
    torch.cuda.set_device(0)
    with torch.no_grad():
        want = model(x)
        got = model.to("cuda:1")(x.to("cuda:1"))
    assert got.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    assert ((got.cpu() - want.cpu()).norm() / want.cpu().norm()).item() < 1e-5
