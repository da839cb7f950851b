"""The glue around the scan compiled ahead of time (AOTInductor) and kept in the user cache (issue 12).

torch.compile's on-disk caches do not make a fresh process cheap: every process still traces each graph with
Dynamo, builds its guards, and loads AOTAutograd's and inductor's cache entries, graph by graph. On an H200
that was 4-5 s of every ``bsmamba2 separate --fused`` with warm caches (8 graphs: way in and way out, both
directions, time and band shapes), more than the compiled glue saves on a song.

Here each call signature (the function, its constants, every input's shape, strides and dtype, the device) is
exported once with ``torch.export``, compiled by ``torch._inductor.aoti_compile_and_package`` into a package in
``$XDG_CACHE_HOME/bsmamba2/glue/`` (named by a digest of that signature, the torch / CUDA / Triton versions, the
device and the glue's source files), and later processes load the package through torch's C++ loader: no
Dynamo, no inductor import. ``GlueCall(fn)`` is the callable that does this, on the devices of
``AOT_DEVICES`` (``BSMAMBA2_GLUE_AOT=1``: every device, ``0``: none); ``mamba2_glue.fused_glue`` hands it out.

What can go wrong never breaks a run: a call that needs autograd, a torch without the API (before 2.5), a
failed export or compile, or a cache folder that cannot be written runs the in-process ``torch.compile`` form
instead (a failed compile leaves a ``.failed`` note, so later processes do not try again); a package that fails
to load is rebuilt (with a log line); and the first call of every package in a process is checked against the
eager function on the same inputs, falling back when they disagree.

A loader that crashes cannot be caught in-process, so a new package is first loaded in a child process; one
that kills the child is deleted and remembered as failed. Packages link a private copy of the C++ runtime
(``LINK_FLAGS``): on the H200 host the usual link left part of libstdc++ exported from the package, and torch's
loader died in the package's std::regex (session 9's native backtrace, ``scripts/gpu_aot_bisect.sh``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bsmamba2.atomic import atomic_write
from bsmamba2.hostinfo import cache_dir, cpu_name

log = logging.getLogger(__name__)

ENV = "BSMAMBA2_GLUE_AOT"
# Opt-in everywhere (BSMAMBA2_GLUE_AOT=1). On an H200 (2026-12-02, BENCHMARKS.md "Session 9") a fresh
# `bsmamba2 separate` with packages ran ten 4-minute songs at 325x real time against 368x for the default eager
# glue with the Triton norms, and the first process spends ~100 s compiling the packages.
AOT_DEVICES: tuple[str, ...] = ()
# The first call of a package in a process is compared with the eager function: a relative difference
# (‖aot − eager‖ / ‖eager‖) above this means a broken package (rounding differences are orders smaller).
CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
# Files whose code the compiled graphs hold: a change to any of them is a new package.
SOURCES = ("mamba2_glue.py", "mamba2_pair.py", "../norms.py")
Runner = Callable[[list[Tensor]], list[Tensor]]
# Link steps of a package's C++ get these on Linux: libstdc++ and libgcc inside the .so, their symbols hidden, so
# the package never mixes its runtime with the process's (part of the digest).
LINK_FLAGS = ("-static-libstdc++", "-static-libgcc", "-Wl,--exclude-libs,ALL")
CHILD_TIMEOUT_S = 180
_CHILD_LOAD = """
import sys, torch
try:
    torch._C._aoti.AOTIModelPackageLoader(sys.argv[1], "model", False, 1, int(sys.argv[2]))
except (AttributeError, TypeError):  # another torch's loader: its Python wrapper
    from torch._inductor import aoti_load_package
    aoti_load_package(sys.argv[1])
"""


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/bsmamba2/glue (default ~/.cache/bsmamba2/glue)."""
    return cache_dir() / "glue"


def enabled(device: torch.device) -> bool:
    """Whether glue calls on ``device`` use ahead-of-time packages (``BSMAMBA2_GLUE_AOT`` overrides)."""
    flag = os.environ.get(ENV)
    if flag is not None:
        return flag == "1"
    return device.type in AOT_DEVICES


class GlueCall:
    """``fn(*args)`` through ahead-of-time compiled packages, one per call signature, on the devices where
    ``enabled``; elsewhere, and for any call no package can serve, through ``fallback``.

    ``fn``: a module-free function of tensors and constants (floats, ints, bools, tuples of them) returning a
    tensor or a tuple of tensors. ``fallback``: what runs when no package can serve a call (default: ``fn``
    under ``torch.compile(dynamic=False)``, made on first use). Same outputs as ``fn``, up to rounding.
    """

    def __init__(self, fn: Callable[..., Any], fallback: Callable[..., Any] | None = None) -> None:
        self.fn = fn
        self._fallback = fallback
        self.runners: dict[tuple[Any, ...], Runner | None] = {}  # None: this signature runs the fallback

    def fallback(self, *args: Any) -> Any:
        if self._fallback is None:
            self._fallback = torch.compile(self.fn, dynamic=False)
        return self._fallback(*args)

    def __call__(self, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors or not enabled(tensors[0].device):
            return self.fallback(*args)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return self.fallback(*args)  # training: the packages hold no backward
        # A package assumes its example inputs' strides (part of the signature) and 16-byte alignment: a
        # misaligned view is copied. Strides are kept as they come: the way out's z is a view of the in_proj
        # output, and copying it would cost the memory traffic the compiled glue saves.
        args = tuple(_aligned(a) if isinstance(a, Tensor) else a for a in args)
        sig = signature(self.fn, args)
        if sig not in self.runners:
            try:
                self.runners[sig] = self._prepare(sig, args)
            except Exception as e:  # noqa: BLE001 - whatever the cache meets, the call still runs
                log.warning("compiled glue unavailable (%s); using torch.compile", _first_line(e))
                self.runners[sig] = None
        run = self.runners[sig]
        if run is None:
            return self.fallback(*args)
        out = run([a for a in args if isinstance(a, Tensor)])
        return out[0] if len(out) == 1 else tuple(out)

    def _prepare(self, sig: tuple[Any, ...], args: tuple[Any, ...]) -> Runner | None:
        """A checked runner for ``sig``: loaded from the cache, else built and stored; None to fall back."""
        name = getattr(self.fn, "__name__", "glue")
        path = cache_folder() / f"{name}-{digest(sig)}.pt2"
        run = None
        if path.exists():
            try:
                run = load_package(path, args)
            except Exception as e:  # noqa: BLE001 - a truncated or foreign file: rebuild it
                log.warning("compiled glue %s does not load (%s); rebuilding it", path.name, _first_line(e))
        if run is None:
            failed = path.with_suffix(".failed")
            if failed.exists():  # torch could not compile this signature here: do not pay for trying again
                log.debug("compiled glue %s failed before: %s", path.stem, failed.read_text()[:200])
                return None
            if not build_package(self.fn, args, path, sig):
                return None
            try:
                run = load_package(path, args)
            except Exception as e:  # noqa: BLE001 - a package torch made but cannot load: run the fallback
                log.warning(
                    "compiled glue %s does not load (%s); using torch.compile", path.name, _first_line(e)
                )
                return None
        return run if agrees(run, self.fn, args) else None


def _aligned(t: Tensor) -> Tensor:
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def signature(fn: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """What a package is specific to: the function, each tensor's (shape, strides, dtype, device) and each
    constant's value, in argument order."""
    spec: list[Any] = [f"{fn.__module__}.{fn.__qualname__}"]
    for a in args:
        if isinstance(a, Tensor):
            spec.append(("T", tuple(a.shape), a.stride(), str(a.dtype), str(a.device)))
        else:
            spec.append(("C", repr(a)))
    return tuple(spec)


def environment(device: torch.device) -> dict[str, Any]:
    """The software and hardware a package was compiled for (part of its digest)."""
    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in SOURCES:
        code.update((here / name).read_bytes())
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "code": code.hexdigest(),
        "link": list(LINK_FLAGS) if sys.platform == "linux" else [],
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        env.update(
            cuda=torch.version.cuda,
            gpu=torch.cuda.get_device_name(index),
            capability=list(torch.cuda.get_device_capability(index)),
            triton=_triton_version(),
        )
    else:
        env["cpu"] = cpu_name()  # the vector ISA the C++ kernels were compiled for
    return env


def digest(sig: tuple[Any, ...]) -> str:
    device = torch.device(next((s[4] for s in sig[1:] if s[0] == "T"), "cpu"))
    blob = json.dumps([list(sig), environment(device)], default=str, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return str(triton.__version__)


class _Bound(nn.Module):
    """``fn`` with its constants bound, a function of its tensor arguments only (what torch.export takes)."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any]) -> None:
        super().__init__()
        self.fn = fn
        self.template = list(args)

    def forward(self, *tensors: Tensor) -> Any:
        it = iter(tensors)
        return self.fn(*(next(it) if isinstance(a, Tensor) else a for a in self.template))


def build_package(fn: Callable[..., Any], args: Sequence[Any], path: Path, sig: tuple[Any, ...]) -> bool:
    """Export ``fn`` at ``args`` and compile it into the package ``path`` (written atomically); False, and
    nothing written, where the cache folder is not writable or torch cannot do it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(path.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:  # compile nothing that could not be kept
        log.debug("glue cache %s not writable: torch.compile", path.parent)
        return False
    try:
        from torch._inductor import aoti_compile_and_package
    except ImportError:  # torch < 2.5
        log.debug("torch %s has no AOTInductor packages: torch.compile", torch.__version__)
        return False
    tensors = tuple(a.detach() for a in args if isinstance(a, Tensor))
    t = time.perf_counter()
    log.info("compiling %s for this device ahead of time, once (kept in %s)", path.stem, path.parent)
    try:
        with torch.no_grad(), atomic_write(path) as tmp, _private_cxx_runtime():
            program = torch.export.export(_Bound(fn, args), tensors)
            # torch 2.5 takes the example inputs again; later versions deprecate them
            again = "args" in inspect.signature(aoti_compile_and_package).parameters
            aoti_compile_and_package(program, *((tensors, {}) if again else ()), package_path=str(tmp))
        with atomic_write(path.with_suffix(".json")) as tmp:  # what the package is for, to people reading
            tmp.write_text(json.dumps(list(sig), default=str))
    except Exception as e:  # noqa: BLE001 - no compiler, an unwritable disk, an op export rejects
        log.warning("compiling %s ahead of time failed (%s); using torch.compile", path.stem, _first_line(e))
        try:  # later processes (same torch, device and code) go straight to torch.compile
            with atomic_write(path.with_suffix(".failed")) as tmp:
                tmp.write_text(f"{type(e).__name__}: {_first_line(e)}\n")
        except OSError:
            pass
        return False
    log.debug("compiled %s in %.1f s", path.stem, time.perf_counter() - t)
    why = _child_load_failure(path, tensors[0].device)
    if why is not None:
        log.warning("compiled glue %s does not load (%s); using torch.compile", path.stem, why)
        path.unlink(missing_ok=True)
        try:
            with atomic_write(path.with_suffix(".failed")) as tmp:
                tmp.write_text(f"child load: {why}\n")
        except OSError:
            pass
        return False
    return True


@contextmanager
def _private_cxx_runtime() -> Iterator[None]:
    """While a package is built, inductor's link steps get ``LINK_FLAGS`` (torch has no setting for extra link
    flags: its option builder is wrapped; where it is not shaped as expected, nothing changes)."""
    try:
        from torch._inductor import cpp_builder

        original = cpp_builder.get_cpp_options
    except (ImportError, AttributeError):
        original = None
    if original is None or sys.platform != "linux":
        yield
        return

    def with_flags(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if kwargs.get("do_link") and isinstance(out, tuple) and out and isinstance(out[-1], list):
            out[-1].extend(LINK_FLAGS)  # passthrough arguments: the link command line only
        return out

    cpp_builder.get_cpp_options = with_flags
    try:
        yield
    finally:
        cpp_builder.get_cpp_options = original


def _child_load_failure(path: Path, device: torch.device) -> str | None:
    """Load ``path`` with torch's C++ loader in a child process: None if it loads, else why not (a crash
    there, e.g. SIGSEGV, would otherwise end the user's process)."""
    index = -1
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_LOAD, str(path), str(index)],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__} in the child"
    if done.returncode == 0:
        return None
    tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
    return f"child exit {done.returncode}{': ' + tail if tail else ''}"


def load_package(path: Path, args: Sequence[Any]) -> Runner:
    """The package's runner, ``run(tensors) -> outputs``, through torch's C++ loader (without the Python
    wrapper, which imports inductor and probes the CPU's vector ISA with compiler runs, ~1.5 s, to print a
    warning the digest already makes moot); through ``torch._inductor.aoti_load_package`` on torch versions
    whose loader takes other arguments."""
    device = next(a.device for a in args if isinstance(a, Tensor))
    index = -1
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is not None:
        try:
            loader = loader_cls(str(path), "model", False, 1, index)
        except TypeError:  # another torch's constructor
            loader = None
        if loader is not None:
            return loader.run  # type: ignore[no-any-return]
    from torch._inductor import aoti_load_package

    model = aoti_load_package(str(path))

    def run(tensors: list[Tensor]) -> list[Tensor]:
        out = model(*tensors)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run


def agrees(run: Runner, fn: Callable[..., Any], args: Sequence[Any]) -> bool:
    """Whether the package's outputs match the eager function's on ``args`` (shapes, dtypes and values within
    ``CHECK_TOLERANCE``): the guard against a stale or broken package, once per package and process."""
    with torch.no_grad():
        want = fn(*args)
        want = list(want) if isinstance(want, (tuple, list)) else [want]
        try:
            got = run([a for a in args if isinstance(a, Tensor)])
        except Exception as e:  # noqa: BLE001 - a package that loads but cannot run these inputs
            log.warning("compiled glue failed to run (%s); using torch.compile", _first_line(e))
            return False
        ok = len(got) == len(want) and all(
            g.shape == w.shape and g.dtype == w.dtype and _rel(g, w) <= CHECK_TOLERANCE.get(w.dtype, 1e-4)
            for g, w in zip(got, want)
        )
    if not ok:
        log.warning("compiled glue disagrees with the eager function; using torch.compile")
    return ok


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
