"""The fused Triton SSD kernel computes the same function as the plain-PyTorch reference, values and gradients.

Every check draws fresh random inputs and compares with ``ssd_chunked`` run in float64 on the same (rounded)
inputs, by ‖Δ‖/‖ref‖ per output and per gradient (y, dx, ddt, dA, dB, dC, dD, and the states when asked).

* On a CPU the kernels run under Triton's interpreter (numpy) in a subprocess, because ``TRITON_INTERPRET``
  must be set before the kernels are defined. The default run covers both kernel families on tiny shapes in a
  few seconds; ``BSMAMBA2_TEST_INTERPRET=1`` adds longer sequences (801 steps), groups and bf16.
* On a GPU (``-m gpu``) the real compiled kernels are checked at BSMamba2's head sizes (64 × 128), in float32
  (exact "ieee" products: ≤ 1e-4) and bf16 (≤ 1e-2), with strided inputs and poisoned outputs.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bsmamba2.model.mixers.ssd import ssd_chunked

pytest.importorskip("triton")

LENGTHS = [1, 7, 62, 64, 65, 801]


def make_inputs(
    b: int,
    l: int,
    h: int,
    p: int,
    g: int,
    n: int,
    dtype: torch.dtype,
    seed: int,
    device: str = "cpu",
    dt_range: tuple[float, float] = (1e-3, 0.1),
) -> dict[str, torch.Tensor]:
    """Random inputs in the ranges Mamba2 produces: dt log-uniform in dt_range, A = −U(1, 16), D ~ N(0, 1).

    x, B, C are in ``dtype`` (the activations); dt, A, D stay float32 (as in the mixer).
    """
    gen = torch.Generator().manual_seed(seed)
    lo, hi = math.log(dt_range[0]), math.log(dt_range[1])
    ins = {
        "x": torch.randn(b, l, h, p, generator=gen),
        "dt": torch.exp(torch.rand(b, l, h, generator=gen) * (hi - lo) + lo),
        "A": -(torch.rand(h, generator=gen) * 15 + 1),
        "B": torch.randn(b, l, g, n, generator=gen) / n**0.25,
        "C": torch.randn(b, l, g, n, generator=gen) / n**0.25,
        "D": torch.randn(h, generator=gen),
        "dy": torch.randn(b, l, h, p, generator=gen),
        "s0": torch.randn(b, h, p, n, generator=gen) * 0.1,
        "dfinal": torch.randn(b, h, p, n, generator=gen),
    }
    for k in ("x", "B", "C", "dy"):
        ins[k] = ins[k].to(dtype)
    return {k: v.to(device) for k, v in ins.items()}


def compare(
    fn,
    ins: dict[str, torch.Tensor],
    with_states: bool = False,
    ref=ssd_chunked,
) -> dict[str, float]:
    """Relative errors ‖fn − ref‖/‖ref‖ of y (and the final state) and of every gradient, ref in float64
    (default: the chunked reference)."""
    names = ["x", "dt", "A", "B", "C", "D"] + (["s0"] if with_states else [])
    results = {}
    for tag, f, conv in (
        ("ref", ref, lambda t: t.detach().double()),
        ("fn", fn, lambda t: t.detach().clone()),
    ):
        args = {k: conv(ins[k]).requires_grad_(True) for k in names}
        out = f(
            args["x"],
            args["dt"],
            args["A"],
            args["B"],
            args["C"],
            args["D"],
            chunk_size=64,
            initial_state=args.get("s0"),
            return_final_state=with_states,
        )
        y, final = out if with_states else (out, None)
        loss = (y.double() * ins["dy"].double()).sum()
        if final is not None:
            loss = loss + (final.double() * ins["dfinal"].double()).sum()
        loss.backward()
        vals = {"y": y} | ({"final": final} if final is not None else {})
        vals |= {"d" + k: args[k].grad for k in names}
        results[tag] = vals
    errs = {}
    for k, ref in results["ref"].items():
        got = results["fn"][k]
        assert got is not None and got.shape == ref.shape, k
        assert torch.isfinite(got).all(), f"{k} has non-finite values"
        diff, scale = (got.double() - ref).norm().item(), ref.norm().item()
        # relative error; absolute where the exact value is zero (dA of a length-1 sequence: no decay acts)
        errs[k] = diff / scale if scale > 1e-9 else diff
    return errs


def bidirectional_reference(x, dt, A, B, C, D, **_: object) -> torch.Tensor:
    """What ``ssd_triton_bidirectional`` computes, from the reference: the first half of the batch forward,
    the second half along the flipped sequence, flipped back; A, D (2, h) = one row per direction."""
    n = x.shape[0] // 2
    fwd = ssd_chunked(x[:n], dt[:n], A[0], B[:n], C[:n], D[0], chunk_size=64)
    flip = [t[n:].flip(1) for t in (x, dt, B, C)]
    bwd = ssd_chunked(flip[0], flip[1], A[1], flip[2], flip[3], D[1], chunk_size=64)
    assert isinstance(fwd, torch.Tensor) and isinstance(bwd, torch.Tensor)
    return torch.cat([fwd, bwd.flip(1)])


def bidirectional_inputs(ins: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """``make_inputs`` of an even batch with a second row of A and D (the backward direction's weights)."""
    gen = torch.Generator().manual_seed(seed)
    h = ins["A"].shape[0]
    A2 = -(torch.rand(h, generator=gen) * 15 + 1).to(ins["A"].device)
    D2 = torch.randn(h, generator=gen).to(ins["D"].device)
    return dict(ins, A=torch.stack([ins["A"], A2]), D=torch.stack([ins["D"], D2]))


def _bidirectional(x, dt, A, B, C, D, **_: object) -> torch.Tensor:
    from bsmamba2.model.mixers.ssd_triton import ssd_triton_bidirectional

    return ssd_triton_bidirectional(x, dt, A, B, C, D)


# ---- CPU: the Triton interpreter, in a subprocess ------------------------------------------------------------
def _interpret_cases(full: bool) -> list[dict]:
    cases: list[dict] = [dict(l=l, b=2, h=2, p=16, g=1, n=16) for l in (1, 7, 64, 65)]
    cases.append(dict(l=70, b=1, h=4, p=16, g=2, n=16))  # two groups, chunked kernel
    cases.append(dict(l=40, b=1, h=4, p=16, g=2, n=16))  # two groups, single-chunk kernel
    cases.append(dict(l=70, b=1, h=2, p=16, g=1, n=16, states=True))
    cases.append(dict(l=9, b=1, h=1, p=8, g=1, n=24, states=True))  # odd sizes, short sequence with states
    cases.append(dict(l=75, b=1, h=2, p=16, g=1, n=16, states=True, chunks=(32, 32)))  # 32-step chunks
    cases.append(dict(l=75, b=1, h=2, p=16, g=1, n=16, chunks=(64, 32)))  # forward and backward chunk apart
    if full:
        cases.append(dict(l=62, b=2, h=4, p=16, g=1, n=16))
        cases.append(dict(l=801, b=1, h=2, p=16, g=1, n=16))
        cases.append(dict(l=130, b=1, h=3, p=24, g=1, n=40))
        cases.append(dict(l=62, b=2, h=4, p=16, g=1, n=16, dtype="bfloat16"))
        cases.append(dict(l=130, b=1, h=2, p=16, g=1, n=16, dtype="bfloat16", states=True))
    return cases


def _run_interpret_cases(full: bool) -> int:
    """Body of the subprocess: TRITON_INTERPRET=1 is already set. Prints one line per case; returns #failures."""
    from bsmamba2.model.mixers import ssd_triton as st

    failures = 0
    shipped = st.SPLIT_BACKWARD
    # every case through both chunked backward forms: split (sweeps + per-chunk kernel) and one program per
    # sequence
    for (i, case), split in itertools.product(enumerate(_interpret_cases(full)), (True, False)):
        case = dict(case)
        states = case.pop("states", False)
        chunks = case.pop("chunks", (64, 64))
        st.SPLIT_BACKWARD = split
        st.force_config("fwd_chunked", *st.CONFIGS["fwd_chunked"][0], chunk=chunks[0])
        for bwd in ("bwd_chunked", "bwd_chunk"):
            st.force_config(bwd, *st.CONFIGS[bwd][0], chunk=chunks[1])
        dtype = getattr(torch, case.pop("dtype", "float32"))
        ins = make_inputs(**case, dtype=dtype, seed=100 + i, dt_range=(0.01, 1.0))
        errs = compare(st.ssd_triton, ins, with_states=states)
        # fp32 products are exact in the interpreter; bf16 cases round y/dx/dB/dC to bf16 on output
        tol = 1e-4 if dtype == torch.float32 else 1e-2
        worst = max(errs, key=lambda k: errs[k])
        ok = errs[worst] < tol
        failures += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {case} {dtype} states={states} chunks={chunks} split={split}: "
            f"{worst} {errs[worst]:.2e}"
        )
    # both directions in one launch (reversed indexing for the second half of the batch), both backward forms
    cases = [dict(l=1, b=2, h=2, p=16, g=1, n=16), dict(l=40, b=2, h=4, p=16, g=2, n=16)]
    cases.append(dict(l=75, b=2, h=2, p=16, g=1, n=16))  # chunked, not a multiple of the chunks
    if full:
        cases += [dict(l=62, b=4, h=4, p=16, g=1, n=16), dict(l=801, b=2, h=2, p=16, g=1, n=16)]
        cases.append(dict(l=130, b=2, h=2, p=16, g=1, n=16, dtype="bfloat16"))
    st.force_config("fwd_chunked", *st.CONFIGS["fwd_chunked"][0], chunk=64)
    st.force_config("bwd_chunked", *st.CONFIGS["bwd_chunked"][0], chunk=32)
    st.force_config("bwd_chunk", *st.CONFIGS["bwd_chunk"][0], chunk=32)
    for (i, case), split in itertools.product(enumerate(cases), (True, False)):
        case = dict(case)
        st.SPLIT_BACKWARD = split
        dtype = getattr(torch, case.pop("dtype", "float32"))
        ins = bidirectional_inputs(make_inputs(**case, dtype=dtype, seed=300 + i, dt_range=(0.01, 1.0)), i)
        errs = compare(_bidirectional, ins, ref=bidirectional_reference)
        tol = 1e-4 if dtype == torch.float32 else 1e-2
        worst = max(errs, key=lambda k: errs[k])
        ok = errs[worst] < tol
        failures += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} bidirectional {case} {dtype} split={split}: {worst} {errs[worst]:.2e}"
        )
    st.SPLIT_BACKWARD = shipped
    return failures


@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_triton_interpreter_matches_reference(full: bool) -> None:
    if full and os.environ.get("BSMAMBA2_TEST_INTERPRET") != "1":
        pytest.skip("set BSMAMBA2_TEST_INTERPRET=1 for the long interpreter run (about a minute)")
    # the repository first, then the caller's path (PYTHONPATH=.tsite: a Triton installed beside the venv)
    path = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
    )
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, __file__, "--interpret", "full" if full else "quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shipped_configurations_are_candidates() -> None:
    """Each architecture's shipped launch configuration is one the triage checks (a default or an extra
    candidate), for every kernel, with a chunk the chunked kernels accept."""
    from bsmamba2.model.mixers import ssd_triton as st

    for arch, table in st.ARCH_CONFIGS.items():
        assert set(table) == set(st.CONFIGS), arch
        for name, (cfg, chunk) in table.items():
            assert cfg in st.CONFIGS[name] + st.EXTRA_CONFIGS[name], (arch, name)
            assert (chunk in (16, 32, 64)) if name in st.CHUNK_T else chunk is None, (arch, name)


def test_environment_overrides_the_shipped_configuration() -> None:
    code = (
        "import torch; from bsmamba2.model.mixers import ssd_triton as st; "
        "print(st.shipped_config('bwd_chunked', torch.device('cpu')), st._chunk('fwd_chunked', torch.device('cpu')))"
    )
    env = dict(
        os.environ,
        BSMAMBA2_SSD_CONFIGS='{"bwd_chunked": [[4, 2, 0]]}',
        BSMAMBA2_SSD_CHUNKS='{"fwd_chunked": 16}',
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["((4,", "2,", "0),", "32)", "16"]


def test_split_backward_kernels_compile_for_hopper() -> None:
    """The split backward's kernels (sweeps, per-chunk gradients) compile ahead of time for sm_90a (Triton's own
    ptxas, no GPU needed) at the paper's head layout and the shipped launch configuration and chunk, and ptxas
    reports their register use."""
    pytest.importorskip("triton.backends.nvidia")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.ssd_resources import compile_one
    from bsmamba2.model.mixers import ssd_triton as st

    for name in ("sweeps", "bwd_chunk"):
        (warps, _, _), chunk = st.ARCH_CONFIGS[(9, 0)][name]
        row = compile_one(name, chunk or st.CHUNK_T["bwd_chunk"], warps, 90)
        assert row["registers"] is not None and 0 < row["registers"] <= 255, row
        assert row["spill_stores_B"] is not None, row


# ---- GPU: the compiled kernels --------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _ssd_triton():
    from bsmamba2.model.mixers.ssd_triton import ssd_triton

    return ssd_triton


def _poison() -> None:
    """Leave NaNs in the caching allocator's free blocks, so an output element the kernel forgets stays NaN."""
    free = torch.cuda.mem_get_info()[0]
    junk = torch.full((min(free // 8, 1 << 28),), float("nan"), device="cuda")
    del junk


# (dtype, head dim, d_state): exact float32 on the paper's layout; bf16 on it and on the small layout (head dim
# 32, d_state 64) where a 4-warp variant once hit an illegal memory access on an H100 (see ssd_triton.CONFIGS).
GPU_CASES = [(torch.float32, 64, 128), (torch.bfloat16, 64, 128), (torch.bfloat16, 32, 64)]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("case", GPU_CASES, ids=["fp32-p64n128", "bf16-p64n128", "bf16-p32n64"])
def test_gpu_matches_reference(length: int, case: tuple[torch.dtype, int, int]) -> None:
    dtype, p, n = case
    torch.set_float32_matmul_precision("highest")  # fp32 inputs → exact ("ieee") products in the kernel
    ins = make_inputs(3, length, 4, p, 1, n, dtype, seed=length, device="cuda")
    _poison()
    errs = compare(_ssd_triton(), ins)
    torch.cuda.synchronize()
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert max(errs.values()) < tol, errs


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", [62, 801])
def test_gpu_paper_shape_bf16_fresh_draws(length: int) -> None:
    """Paper head layout (16 heads × 64, d_state 128, 1 group), three independent draws."""
    for seed in range(3):
        ins = make_inputs(4, length, 16, 64, 1, 128, torch.bfloat16, seed=1000 + seed, device="cuda")
        errs = compare(_ssd_triton(), ins)
        assert max(errs.values()) < 1e-2, errs


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", [7, 65, 200])
def test_gpu_states_and_groups(length: int) -> None:
    torch.set_float32_matmul_precision("highest")
    ins = make_inputs(2, length, 4, 64, 2, 128, torch.float32, seed=7 + length, device="cuda")
    errs = compare(_ssd_triton(), ins, with_states=True)
    assert max(errs.values()) < 1e-4, errs


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", [62, 801])
def test_gpu_strided_inputs_and_repeatability(length: int) -> None:
    """x, B, C as column slices of one packed tensor (as the mixer's conv output), dy non-contiguous; two runs
    of the same inputs agree (float32 atomics may reorder sums, nothing more)."""
    fn = _ssd_triton()
    b, h, p, n = 2, 16, 64, 128
    ins = make_inputs(b, length, h, p, 1, n, torch.bfloat16, seed=3, device="cuda")
    packed = torch.cat([ins["x"].flatten(2), ins["B"].flatten(2), ins["C"].flatten(2)], dim=-1)
    x = packed[..., : h * p].unflatten(-1, (h, p))
    B = packed[..., h * p : h * p + n].unflatten(-1, (1, n))
    C = packed[..., h * p + n :].unflatten(-1, (1, n))
    assert not x.is_contiguous()
    dy = torch.randn(b, h, length, p, device="cuda", dtype=torch.bfloat16).transpose(1, 2)

    def run(xx: torch.Tensor, BB: torch.Tensor, CC: torch.Tensor) -> list[torch.Tensor]:
        args = [t.detach().clone().requires_grad_(True) if t.is_contiguous() else t.detach().requires_grad_(True)
                for t in (xx, ins["dt"], ins["A"], BB, CC, ins["D"])]  # fmt: skip
        y = fn(*args)
        y.backward(dy)
        return [y] + [a.grad for a in args]

    strided = run(x, B, C)
    contiguous = run(x.contiguous(), B.contiguous(), C.contiguous())
    again = run(x.contiguous(), B.contiguous(), C.contiguous())
    for s, c, a in zip(strided, contiguous, again):  # bf16 outputs: an atomic reordering may flip one ulp
        assert ((s.double() - c.double()).norm() / c.double().norm()).item() < 1e-4
        assert ((a.double() - c.double()).norm() / c.double().norm()).item() < 1e-4


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("chunks", [(64, 64), (32, 32)])
def test_gpu_chunk_lengths(chunks: tuple[int, int]) -> None:
    """The chunked kernels' own chunk length (a tiling choice) does not change the function."""
    from bsmamba2.model.mixers import ssd_triton as st

    torch.set_float32_matmul_precision("highest")
    for name, chunk in (("fwd_chunked", 0), ("bwd_chunked", 1), ("bwd_chunk", 1)):
        st.force_config(name, *st.CONFIGS[name][0], chunk=chunks[chunk])
    shipped = st.SPLIT_BACKWARD
    try:
        ins = make_inputs(2, 801, 4, 64, 1, 128, torch.float32, seed=5, device="cuda")
        errs: dict[tuple[bool, bool], dict[str, float]] = {}
        for split, states in itertools.product((True, False), (True, False)):  # both backward forms
            st.SPLIT_BACKWARD = split
            errs[split, states] = compare(st.ssd_triton, ins, with_states=states)
    finally:
        st.SPLIT_BACKWARD = shipped
        for name in ("fwd_chunked", "bwd_chunked", "bwd_chunk"):
            st.force_config(name, None)
    assert all(max(e.values()) < 1e-4 for e in errs.values()), errs


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", [65, 801])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_split_backward_matches_reference(length: int, dtype: torch.dtype) -> None:
    """The split backward (sweeps + per-chunk kernel, the default) and the one-program-per-sequence backward at
    the paper's head layout, each against the float64 reference, both directions in one launch."""
    from bsmamba2.model.mixers import ssd_triton as st

    torch.set_float32_matmul_precision("highest")
    ins = bidirectional_inputs(make_inputs(4, length, 16, 64, 1, 128, dtype, seed=11, device="cuda"), 11)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    shipped = st.SPLIT_BACKWARD
    try:
        for split in (True, False):
            st.SPLIT_BACKWARD = split
            _poison()
            errs = compare(_bidirectional, ins, ref=bidirectional_reference)
            assert max(errs.values()) < tol, (split, errs)
    finally:
        st.SPLIT_BACKWARD = shipped


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("split", [True, False], ids=["ssd-split-bwd", "ssd-per-sequence-bwd"])
def test_gpu_model_backends_agree(split: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small BSMamba2 gives the same output and parameter gradients with the triton and chunked backends
    (float32, exact products): the mixer's strided views of x, B, C reach the kernels correctly, through either
    chunked backward (the time path has ~690 steps, so it runs them)."""
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model
    from bsmamba2.model.mixers import ssd_triton

    monkeypatch.setattr(ssd_triton, "SPLIT_BACKWARD", split)

    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(dim=32, mamba2=dict(headdim=16, d_state=32))  # 4 heads; ~690 frames, 18 bands
    ref = build_model(cfg, backend="torch", device="cuda")
    fast = build_model(cfg, backend="triton", device="cuda")
    fast.load_state_dict(ref.state_dict())
    wave = 0.1 * torch.randn(2, cfg.audio_channels, cfg.sample_rate, device="cuda")
    outs = []
    for m in (ref, fast):
        y = m(wave)
        (y * torch.linspace(-1, 1, y.shape[-1], device="cuda")).sum().backward()
        outs.append([y.detach()] + [p.grad.detach().clone() for p in m.parameters() if p.grad is not None])
    assert len(outs[0]) == len(outs[1])
    for a, b in zip(outs[1], outs[0]):
        assert ((a - b).norm() / b.norm().clamp_min(1e-12)).item() < 1e-4


@pytest.mark.gpu
@gpu
def test_gpu_auto_backend_is_triton_on_cuda() -> None:
    from bsmamba2.model.mixers.ssd import resolve_backend

    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    assert resolve_backend("torch", torch.device("cuda")) == "torch"
    assert resolve_backend("auto", torch.device("cpu")) == "fast"  # the plain-PyTorch fast path off CUDA


if __name__ == "__main__":
    # Subprocess entry of test_triton_interpreter_matches_reference (TRITON_INTERPRET=1 set by the caller).
    if len(sys.argv) == 3 and sys.argv[1] == "--interpret":
        torch.set_num_threads(1)
        sys.exit(1 if _run_interpret_cases(sys.argv[2] == "full") else 0)
