"""The glue compiled ahead of time (``glue_cache``): packages give the eager glue's outputs (float32 within 1e-5,
bf16 within 1e-2), a later process loads them without compiling, and nothing that can go wrong with the cache
breaks a call: a corrupt package is rebuilt, a package that disagrees with the eager function is not used, an
unwritable cache folder or a call that needs autograd runs the in-process form, and nothing is written then.

Each real package costs a C++ compile (~30 s on a loaded 2-core CPU), so two are built, once per module."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bsmamba2.model.mixers import glue_cache
from bsmamba2.model.mixers.mamba2_glue import block_in, block_out

SIZES = (32, 8, 2)  # d_inner, g·n, heads
D = 16


def _in_args(dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    """block_in's arguments at a tiny size: x (3, 20, D), the norm, in_proj (dtype), conv, Δ bias, flip."""
    g = torch.Generator().manual_seed(0)
    d_inner, gn, h = SIZES
    ch = d_inner + 2 * gn
    in_w = (torch.randn(2 * d_inner + 2 * gn + h, D, generator=g) * 0.2).to(dtype)
    conv_w, conv_b = torch.randn(ch, 1, 4, generator=g), torch.randn(ch, generator=g)
    x, norm_w, dt_bias = (
        torch.randn(3, 20, D, generator=g),
        torch.randn(D, generator=g),
        torch.randn(h, generator=g),
    )
    return (x, norm_w, 1e-5, in_w, conv_w, conv_b, dt_bias, SIZES, True)


def _out_args(dtype: torch.dtype = torch.bfloat16) -> tuple[Any, ...]:
    """block_out's arguments as a bf16-autocast model passes them: y, z (a strided view), out_proj in bf16,
    x in float32."""
    g = torch.Generator().manual_seed(1)
    d_inner = SIZES[0]
    y = torch.randn(3, 20, d_inner, generator=g).to(dtype)
    # z as the model passes it: a view of the in_proj output (strided, not copied)
    z = torch.randn(3, 20, 2 * d_inner + 8, generator=g).to(dtype)[..., :d_inner]
    out_w = (torch.randn(D, d_inner, generator=g) * 0.2).to(dtype)
    return (y, z, torch.randn(d_inner, generator=g), 1e-5, out_w, torch.randn(3, 20, D, generator=g), False)


class Counted:
    """A stand-in for torch.compile's form (the eager function), counting its calls."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.fn(*args)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(autouse=True)
def aot_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(glue_cache.ENV, "1")  # the CPU too
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real packages of block_in (float32) and block_out (bf16 weights), built once into a shared cache."""
    root = tmp_path_factory.mktemp("glue")
    mp = pytest.MonkeyPatch()
    mp.setenv(glue_cache.ENV, "1")
    mp.setenv("XDG_CACHE_HOME", str(root))
    try:
        paths = {}
        for name, fn, args in (("in", block_in, _in_args()), ("out", block_out, _out_args())):
            call = glue_cache.GlueCall(fn, fallback=Counted(fn))
            with torch.no_grad():
                call(*args)
            assert call._fallback.calls == 0  # type: ignore[union-attr]
            (paths[name],) = (root / "bsmamba2" / "glue").glob(f"{fn.__name__}-*.pt2")
        return paths
    finally:
        mp.undo()


def _use(built_path: Path) -> Path:
    """Copy a built package into this test's cache folder; returns the copy."""
    dest = glue_cache.cache_folder() / built_path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(built_path.read_bytes())
    return dest


@pytest.mark.slow
def test_packages_match_eager_and_load_without_compiling(
    built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, fn, args, tol in (("in", block_in, _in_args(), 1e-5), ("out", block_out, _out_args(), 1e-2)):
        _use(built[name])
        monkeypatch.setattr(glue_cache, "build_package", _never)  # a later process: load only
        call = glue_cache.GlueCall(fn, fallback=Counted(fn))
        with torch.no_grad():
            got, want = call(*args), fn(*args)
            again = call(*args)
        assert call._fallback.calls == 0  # type: ignore[union-attr]
        got, want, again = (list(t) if isinstance(t, tuple) else [t] for t in (got, want, again))
        for g, w, a in zip(got, want, again, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            assert _rel(g, w) <= tol and torch.equal(g, a)


def _never(*args: Any) -> bool:
    raise AssertionError("compiled again")


@pytest.mark.slow
def test_corrupt_package_is_rebuilt(
    built: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _use(built["in"])
    path.write_bytes(b"PK\x03\x04 truncated")
    builds: list[Path] = []

    def rebuild(fn: Any, args: Any, dest: Path, sig: Any) -> bool:  # the real build, taken from the fixture
        builds.append(dest)
        dest.write_bytes(built["in"].read_bytes())
        return True

    monkeypatch.setattr(glue_cache, "build_package", rebuild)
    args = _in_args()
    call = glue_cache.GlueCall(block_in, fallback=Counted(block_in))
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = call(*args)
    assert builds == [path] and "rebuilding" in caplog.text
    assert call._fallback.calls == 0  # type: ignore[union-attr]
    assert all(_rel(g, w) <= 1e-5 for g, w in zip(out, block_in(*args), strict=True))


@pytest.mark.slow
def test_package_that_disagrees_is_not_used(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _use(built["in"])
    real = glue_cache.load_package

    def wrong(path: Path, args: Any) -> glue_cache.Runner:
        run = real(path, args)
        return lambda tensors: [t + 1 for t in run(tensors)]

    monkeypatch.setattr(glue_cache, "load_package", wrong)
    monkeypatch.setattr(glue_cache, "build_package", _never)
    args = _in_args()
    call = glue_cache.GlueCall(block_in, fallback=Counted(block_in))
    with torch.no_grad():
        out = call(*args)
    assert call._fallback.calls == 1
    assert all(torch.equal(g, w) for g, w in zip(out, block_in(*args), strict=True))


def test_unwritable_cache_falls_back_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "home_cache"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    before = sorted(tmp_path.rglob("*"))
    call = glue_cache.GlueCall(block_out, fallback=Counted(block_out))
    args = _out_args(torch.float32)
    with torch.no_grad():
        out = call(*args)
        call(*args)
    assert call._fallback.calls == 2 and torch.equal(out, block_out(*args))
    assert sorted(tmp_path.rglob("*")) == before


def test_autograd_and_other_devices_use_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glue_cache, "build_package", _never)
    call = glue_cache.GlueCall(block_out, fallback=Counted(block_out))
    args = list(_out_args(torch.float32))
    args[4] = args[4].requires_grad_()
    out = call(*args)  # grad enabled and a weight that needs it: training
    assert out.requires_grad and call._fallback.calls == 1  # type: ignore[union-attr]
    monkeypatch.delenv(glue_cache.ENV)  # the default: no packages (opt-in until timed on a GPU)
    with torch.no_grad():
        call(*args)
    assert call._fallback.calls == 2  # type: ignore[union-attr]
    assert not glue_cache.cache_folder().exists()


def test_signature_tells_apart_what_a_package_is_specific_to() -> None:
    args = _in_args()
    base = glue_cache.signature(block_in, args)
    flipped = glue_cache.signature(block_in, (*args[:-1], False))
    longer = glue_cache.signature(block_in, (torch.randn(3, 21, D), *args[1:]))
    strided = glue_cache.signature(block_in, (torch.randn(3, D, 20).transpose(1, 2), *args[1:]))
    bf16 = glue_cache.signature(block_in, _in_args(torch.bfloat16))
    sigs = [base, flipped, longer, strided, bf16]
    assert len(set(sigs)) == len(sigs)
    assert len({glue_cache.digest(s) for s in sigs}) == len(sigs)
    assert glue_cache.digest(base) == glue_cache.digest(glue_cache.signature(block_in, _in_args()))


def test_failed_compile_is_remembered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("an op export rejects")

    monkeypatch.setattr(torch.export, "export", refuse)
    args = _out_args(torch.float32)
    call = glue_cache.GlueCall(block_out, fallback=Counted(block_out))
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = call(*args)
    assert call._fallback.calls == 1 and torch.equal(out, block_out(*args))  # type: ignore[union-attr]
    assert "failed" in caplog.text
    assert [p.suffix for p in glue_cache.cache_folder().iterdir()] == [".failed"]  # no partial package
    monkeypatch.setattr(glue_cache, "build_package", _never)  # a later process does not try again
    later = glue_cache.GlueCall(block_out, fallback=Counted(block_out))
    with torch.no_grad():
        later(*args)
    assert later._fallback.calls == 1  # type: ignore[union-attr]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_packages_build_and_match_eager(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """On CUDA a package is built, not the fallback, and matches the eager glue."""
    monkeypatch.setenv(glue_cache.ENV, "1")
    for fn, args, tol in ((block_in, _in_args(dtype), 1e-5 if dtype == torch.float32 else 1e-2),
                          (block_out, _out_args(dtype), 1e-5 if dtype == torch.float32 else 1e-2)):  # fmt: skip
        args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
        call = glue_cache.GlueCall(fn, fallback=Counted(fn))
        with torch.no_grad():
            got, want = call(*args), fn(*args)
        assert call._fallback.calls == 0, "no package: see the log for why AOTInductor failed here"
        got, want = (list(t) if isinstance(t, tuple) else [t] for t in (got, want))
        assert all(_rel(g, w) <= tol for g, w in zip(got, want, strict=True))


@pytest.mark.slow
def test_package_that_kills_its_loader_is_deleted_and_remembered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A package whose load kills the child process is never loaded here: deleted, a .failed note, the
    fallback runs, and a later call does not build it again."""
    monkeypatch.setattr(glue_cache, "_child_load_failure", lambda path, device: "child exit -11")
    call = glue_cache.GlueCall(block_in, fallback=Counted(block_in))
    with caplog.at_level(logging.WARNING), torch.no_grad():
        call(*_in_args())
    assert call._fallback.calls == 1  # type: ignore[union-attr]
    folder = glue_cache.cache_folder()
    assert not list(folder.glob("*.pt2")) and len(list(folder.glob("*.failed"))) == 1
    assert "does not load (child exit -11)" in caplog.text
    monkeypatch.setattr(glue_cache, "build_package", _never)
    later = glue_cache.GlueCall(block_in, fallback=Counted(block_in))
    with torch.no_grad():
        later(*_in_args())
    assert later._fallback.calls == 1  # type: ignore[union-attr]


def test_child_load_failure_names_the_exit(tmp_path: Path) -> None:
    """The child process reports a file torch cannot load as a failure, with its exit status."""
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 truncated")
    why = glue_cache._child_load_failure(bad, torch.device("cpu"))
    assert why is not None and why.startswith("child exit ")


def test_link_flags_go_to_link_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a package is built, inductor's link commands get the private C++ runtime; compile-only and
    precompiled-header steps do not (a linker flag there makes g++ try to link a header), and afterwards
    nothing is changed."""
    cpp_builder = pytest.importorskip("torch._inductor.cpp_builder")
    monkeypatch.setattr(glue_cache.sys, "platform", "linux")
    calls = []

    def fake(*, cpp_compiler: str, do_link: bool, **kwargs: Any) -> tuple[list[str], ...]:
        calls.append(do_link)
        return ([], [], [], [], [], [], ["-O2"])

    monkeypatch.setattr(cpp_builder, "get_cpp_options", fake)
    with glue_cache._private_cxx_runtime():
        linked = cpp_builder.get_cpp_options(cpp_compiler="g++", do_link=True)
        compiled = cpp_builder.get_cpp_options(cpp_compiler="g++", do_link=False)
    assert linked[-1] == ["-O2", *glue_cache.LINK_FLAGS] and compiled[-1] == ["-O2"]
    assert cpp_builder.get_cpp_options is fake and calls == [True, False]
