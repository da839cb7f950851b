"""The fast plain-PyTorch SSD (the CPU default) computes the reference's function: values, states, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bsmamba2.model.mixers.ssd import resolve_backend, ssd_chunked, ssd_naive
from bsmamba2.model.mixers.ssd_fast import ssd_fast


def _inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, l, h, generator=gen, dtype=torch.float64) - 1.0)
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) * 8 + 0.5)
    B = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    return [x, dt, A, B, C, D]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("l", [1, 5, 16, 17, 62, 130])
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("g", [1, 2])
def test_matches_the_recurrence_with_states(l: int, chunk: int, g: int) -> None:
    x, dt, A, B, C, D = _inputs(2, l, 4, 3, g, 5, seed=l * 7 + chunk + g)
    S0 = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    for init in (None, S0):
        y_ref, s_ref = ssd_naive(x, dt, A, B, C, D, initial_state=init, return_final_state=True)
        y, s = ssd_fast(x, dt, A, B, C, D, chunk_size=chunk, initial_state=init, return_final_state=True)
        assert _rel(y, y_ref) < 1e-12 and _rel(s, s_ref) < 1e-12
        assert _rel(ssd_fast(x, dt, A, B, C, D, chunk_size=chunk, initial_state=init), y_ref) < 1e-12


def test_gradients_match_the_reference() -> None:
    ins = _inputs(2, 45, 4, 3, 1, 5, seed=3)
    outs = []
    for fn in (ssd_chunked, ssd_fast):
        leaves = [t.clone().requires_grad_() for t in ins]
        (fn(*leaves, chunk_size=16) * torch.linspace(-1, 1, 3, dtype=torch.float64)).sum().backward()
        outs.append([t.grad for t in leaves])
    for a, b in zip(*outs):
        assert a is not None and b is not None and _rel(a, b) < 1e-10


def test_float32_model_shapes_agree_with_the_reference() -> None:
    """The bundled model's two scans (time path: 801 frames; band path: 62 bands) in float32."""
    for b, l in ((3, 801), (40, 62)):
        ins = [t.float() for t in _inputs(b, l, 8, 32, 1, 64, seed=l)]
        assert _rel(ssd_fast(*ins, chunk_size=64), ssd_chunked(*ins, chunk_size=64)) < 1e-5


def test_auto_means_fast_off_cuda() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "fast"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"


def test_cpu_chunk_balances_decays_and_states() -> None:
    from bsmamba2.model.mixers.ssd_fast import cpu_chunk

    assert (cpu_chunk(32, 64), cpu_chunk(64, 128)) == (32, 64)  # the bundled and the paper model
    assert cpu_chunk(1, 1) == 16 and cpu_chunk(1024, 1024) == 256


def test_inference_blocks_compute_the_unblocked_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference runs big batches in blocks of sequences; a block of one must give the whole batch's result."""
    import bsmamba2.model.mixers.ssd_fast as fast

    ins = [t.float() for t in _inputs(5, 150, 4, 8, 2, 16, seed=11)]
    monkeypatch.setattr(fast, "factor_chunk", lambda a: None)  # the decay-matrix path, which blocks
    with torch.inference_mode():
        whole = ssd_fast(*ins, chunk_size=64)
        monkeypatch.setattr(fast, "BLOCK_BYTES", 1)
        blocked = ssd_fast(*ins, chunk_size=64)
    assert _rel(blocked, whole) < 1e-6
    assert _rel(blocked, ssd_chunked(*ins, chunk_size=64)) < 1e-5


@pytest.mark.parametrize("l", [62, 200])
def test_bfloat16_inputs_agree_with_the_float32_reference(l: int) -> None:
    """bf16 x, B, C (what an autocast region hands the scan): products in bf16, decays and states in float32,
    within 1e-2 of the float32 reference in aggregate; the output stays bf16, the final state float32."""
    x, dt, A, B, C, D = [t.float() for t in _inputs(3, l, 8, 16, 1, 32, seed=l)]
    S0 = torch.randn(3, 8, 16, 32)
    y_ref, s_ref = ssd_chunked(x, dt, A, B, C, D, chunk_size=64, initial_state=S0, return_final_state=True)
    xb, Bb, Cb = x.bfloat16(), B.bfloat16(), C.bfloat16()
    with torch.inference_mode():
        y, s = ssd_fast(xb, dt, A, Bb, Cb, D, chunk_size=64, initial_state=S0, return_final_state=True)
        y_plain = ssd_fast(xb, dt, A, Bb, Cb, D, chunk_size=64)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    assert _rel(y.float(), y_ref) < 1e-2 and _rel(s, s_ref) < 1e-2
    assert _rel(y_plain.float(), ssd_chunked(x, dt, A, B, C, D, chunk_size=64)) < 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is off inside: the same numbers
        assert torch.equal(ssd_fast(xb, dt, A, Bb, Cb, D, chunk_size=64), y_plain)


@pytest.mark.parametrize(
    "mamba2",
    [
        {"d_state": 16, "headdim": 8, "chunk_size": 16},
        {"d_state": 128, "headdim": 64, "expand": 4, "chunk_size": 64},
    ],
    ids=["tiny", "paper-heads"],
)
def test_a_model_with_the_fast_scan_matches_the_reference_model(mamba2: dict[str, int]) -> None:
    """The whole network, fast scan (the CPU inference path) against the plain-PyTorch reference: fp32
    within 1e-4, bf16 autocast within 1e-2 of the reference in fp32; also with the paper's head layout
    (headdim 64, d_state 128, expand 4, one group) in a narrow model."""
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    cfg = ModelConfig.tiny(mamba2=mamba2, **({"dim": 32} if mamba2["headdim"] == 64 else {}))
    torch.manual_seed(0)
    ref = build_model(cfg, backend="torch").eval()
    fast = build_model(cfg, backend="fast").eval()
    fast.load_state_dict(ref.state_dict())
    wave = 0.1 * torch.randn(1, 2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        y_ref = ref(wave)
        assert _rel(fast(wave), y_ref) < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _rel(fast(wave), y_ref) < 1e-2


@pytest.mark.parametrize("l", [5, 62, 130, 401])
@pytest.mark.parametrize("g", [1, 2])
def test_factored_decays_and_decay_matrices_agree(l: int, g: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference factors the decays (exact in float64 to rounding); the decay-matrix path computes the same."""
    import bsmamba2.model.mixers.ssd_fast as fast

    x, dt, A, B, C, D = _inputs(3, l, 4, 3, g, 5, seed=l + g)
    S0 = torch.randn(3, 4, 3, 5, dtype=torch.float64)
    y_ref, s_ref = ssd_naive(x, dt, A, B, C, D, initial_state=S0, return_final_state=True)
    with torch.no_grad():
        assert fast.factor_chunk(dt * A) is not None
        for longest in (fast.MAX_FACTOR_CHUNK, 16):  # one chunk or several, the last one padded
            monkeypatch.setattr(fast, "MAX_FACTOR_CHUNK", longest)
            y, s = ssd_fast(x, dt, A, B, C, D, initial_state=S0, return_final_state=True)
            assert _rel(y, y_ref) < 1e-12 and _rel(s, s_ref) < 1e-12
            assert _rel(ssd_fast(x, dt, A, B, C, D), ssd_naive(x, dt, A, B, C, D)) < 1e-12
        monkeypatch.setattr(fast, "factor_chunk", lambda a: None)
        y, s = ssd_fast(x, dt, A, B, C, D, initial_state=S0, return_final_state=True)
        assert _rel(y, y_ref) < 1e-12 and _rel(s, s_ref) < 1e-12


def test_factor_chunk_keeps_every_chunk_within_range() -> None:
    from bsmamba2.model.mixers.ssd_fast import FACTOR_EXP, MAX_FACTOR_CHUNK, MIN_FACTOR_CHUNK, factor_chunk

    gen = torch.Generator().manual_seed(0)
    for scale in (0.01, 0.5, 3.0, 10.0):
        a = -scale * torch.rand(4, 401, 8, generator=gen, dtype=torch.float64)
        q = factor_chunk(a)
        assert q is not None and MIN_FACTOR_CHUNK <= q <= MAX_FACTOR_CHUNK
        c = -(-401 // q)
        ranges = -F.pad(a, (0, 0, 0, c * q - 401)).view(4, c, q, 8).sum(2)
        assert float(ranges.max()) <= 2 * FACTOR_EXP
    assert factor_chunk(torch.zeros(2, 62, 8)) == 62  # no decay: one chunk
    assert factor_chunk(torch.full((2, 62, 8), -20.0)) is None  # forgets within a step: decay matrices


def test_heads_that_forget_within_steps_take_the_decay_matrices() -> None:
    """Decays beyond the factored range (A·Δ ≈ −40 per step) still give the recurrence's outputs."""
    from bsmamba2.model.mixers.ssd_fast import factor_chunk

    x, dt, A, B, C, D = _inputs(2, 70, 4, 3, 1, 5, seed=5)
    A = A * 40
    with torch.no_grad():
        assert factor_chunk(dt * A) is None
        y, s = ssd_fast(x, dt, A, B, C, D, chunk_size=16, return_final_state=True)
    y_ref, s_ref = ssd_naive(x, dt, A, B, C, D, return_final_state=True)
    assert _rel(y, y_ref) < 1e-12 and _rel(s, s_ref) < 1e-12


def test_fast_decays_keep_float32_precision_across_chunks() -> None:
    """Heads whose chunks span close to the factored range (γ = e^{m_{i+1}} u_end_i down to e^-120, below
    float32's normal numbers): the carry still takes float32 precision, against the float64 recurrence."""
    import bsmamba2.model.mixers.ssd_fast as fast

    gen = torch.Generator().manual_seed(2)
    b, l, h = 2, 801, 4
    x, dt, A, B, C, D = _inputs(b, l, h, 8, 1, 16, seed=2)
    dt = 0.1 * torch.rand(b, l, h, generator=gen, dtype=torch.float64)
    A = torch.full((h,), -16.0, dtype=torch.float64)  # every head fast (one applied factor: 6e-6)
    q = fast.factor_chunk(dt * A)
    assert q is not None and q < l
    c = -(-l // q)
    acum = F.pad(dt * A, (0, 0, 0, c * q - l)).view(b, c, q, h).cumsum(2)
    mid = (acum[:, :, 0] + acum[:, :, -1]) / 2
    gamma = torch.exp(mid[:, 1:] + acum[:, :-1, -1] - mid[:, :-1])
    assert float(gamma.min()) < fast.GAMMA_MIN  # the case this test is for
    y_ref, s_ref = ssd_naive(x, dt, A, B, C, D, return_final_state=True)
    with torch.no_grad():
        y, s = ssd_fast(*(t.float() for t in (x, dt, A, B, C, D)), return_final_state=True)
    assert _rel(y.double(), y_ref) < 1e-6 and _rel(s.double(), s_ref) < 1e-6
