"""One probe of the AOTInductor glue's load crash (scripts/gpu_aot_bisect.sh runs each in a fresh process).

  python scripts/aot_probe.py load PKG [--index N] [--touch]   torch's C++ loader on a package, nothing else
  python scripts/aot_probe.py pyload PKG                        torch._inductor.aoti_load_package
  python scripts/aot_probe.py rebuild PKG_JSON CACHE            a package at the signature PKG_JSON names, built
                                                                and loaded in this plain process (GlueCall)
  python scripts/aot_probe.py separator CACHE                   Separator(fused=True) on 20 s of noise
  python scripts/aot_probe.py small CACHE [--static-cxx]         a tiny block_in package (the unit test's size)
                                                                built and loaded here; --static-cxx links
                                                                libstdc++ into it statically, symbols hidden

Prints one line per stage; a crash shows as a missing "ok" line (and the native backtrace of segv_bt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

T0 = time.perf_counter()


def stamp(msg: str) -> None:
    print(f"[aot_probe {time.perf_counter() - T0:6.2f}s] {msg}", flush=True)


def load(pkg: str, index: int, touch: bool) -> None:
    if touch:
        torch.zeros(1, device="cuda")
        stamp("CUDA touched")
    loader = torch._C._aoti.AOTIModelPackageLoader(pkg, "model", False, 1, index)
    stamp(f"constructed (index {index})")
    stamp(f"metadata {sorted(loader.get_metadata().items())[:6]}")


def pyload(pkg: str) -> None:
    from torch._inductor import aoti_load_package

    aoti_load_package(pkg)
    stamp("aoti_load_package ok")


def example(spec: list, gen: torch.Generator) -> list:
    """Arguments like the signature's: random tensors with its shapes, strides, dtypes; constants as given."""
    args = []
    for s in spec[1:]:
        if s[0] == "T":
            shape, stride, dtype, device = s[1], s[2], getattr(torch, s[3].split(".")[1]), s[4]
            size = 1 + sum((n - 1) * st for n, st in zip(shape, stride))
            base = torch.randn(size, generator=gen).to(dtype).to(device)
            args.append(base.as_strided(shape, stride))
        else:
            args.append(eval(s[1]))  # noqa: S307 - the repr of a float/int/bool/tuple this repo wrote
    return args


def rebuild(spec_path: str, cache: str) -> None:
    import os

    os.environ["XDG_CACHE_HOME"] = cache
    os.environ["BSMAMBA2_GLUE_AOT"] = "1"
    from bsmamba2.model.mixers import glue_cache, mamba2_glue

    spec = json.loads(Path(spec_path).read_text())
    fn = getattr(mamba2_glue, spec[0].rsplit(".", 1)[1])
    args = example(spec, torch.Generator().manual_seed(0))
    stamp(f"args {[tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args]}")
    calls = []

    def fallback(*a):
        calls.append(1)
        return fn(*a)

    call = glue_cache.GlueCall(fn, fallback=fallback)
    with torch.no_grad():
        call(*args)
    stamp(f"GlueCall ran, fallback calls {len(calls)}")


def separator(cache: str) -> None:
    import os

    os.environ["XDG_CACHE_HOME"] = cache
    os.environ["BSMAMBA2_GLUE_AOT"] = "1"
    from bsmamba2.api import Separator

    sep = Separator.from_pretrained(device="cuda", fused=True, batch_size=8)
    stamp("model loaded")
    x = 0.1 * torch.randn(2, 20 * 44100)
    out = sep.separate(x, 44100)
    stamp(f"separated: {sorted(out)}")


def static_cxx() -> None:
    """Link the packages' .so with a private, hidden copy of libstdc++ (inductor does so for Windows)."""
    from torch._inductor import cpp_builder

    orig = cpp_builder.get_cpp_options

    def patched(*a, **k):
        out = orig(*a, **k)
        if k.get("do_link", a[1] if len(a) > 1 else False):  # link steps only (not precompiled headers)
            out[-1].extend(["-static-libstdc++", "-static-libgcc", "-Wl,--exclude-libs,ALL"])
        return out

    cpp_builder.get_cpp_options = patched
    stamp("inductor's link flags get -static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL")


def small(cache: str, static: bool) -> None:
    import os

    os.environ["XDG_CACHE_HOME"] = cache
    os.environ["BSMAMBA2_GLUE_AOT"] = "1"
    if static:
        static_cxx()
    from bsmamba2.model.mixers import glue_cache, mamba2_glue

    g = torch.Generator().manual_seed(0)
    d_inner, gn, h, d = 32, 8, 2, 16
    in_w = (torch.randn(2 * d_inner + 2 * gn + h, d, generator=g) * 0.2).cuda()
    args = (
        torch.randn(3, 20, d, generator=g).cuda(), torch.randn(d, generator=g).cuda(), 1e-5, in_w,
        torch.randn(d_inner + 2 * gn, 1, 4, generator=g).cuda(), torch.randn(d_inner + 2 * gn, generator=g).cuda(),
        torch.randn(h, generator=g).cuda(), (d_inner, gn, h), True,
    )  # fmt: skip
    calls = []

    def fallback(*a):
        calls.append(1)
        return mamba2_glue.block_in(*a)

    call = glue_cache.GlueCall(mamba2_glue.block_in, fallback=fallback)
    with torch.no_grad():
        call(*args)
    stamp(f"small GlueCall ran, fallback calls {len(calls)} (0 = the package loaded and agreed)")


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("load")
    p.add_argument("pkg")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--touch", action="store_true")
    p = sub.add_parser("pyload")
    p.add_argument("pkg")
    p = sub.add_parser("rebuild")
    p.add_argument("spec")
    p.add_argument("cache")
    p = sub.add_parser("separator")
    p.add_argument("cache")
    p = sub.add_parser("small")
    p.add_argument("cache")
    p.add_argument("--static-cxx", action="store_true")
    p = sub.add_parser("rebuild-static")
    p.add_argument("spec")
    p.add_argument("cache")
    a = ap.parse_args()
    stamp(f"torch {torch.__version__} start: {a.what}")
    if a.what == "load":
        load(a.pkg, a.index, a.touch)
    elif a.what == "pyload":
        pyload(a.pkg)
    elif a.what == "rebuild":
        rebuild(a.spec, a.cache)
    elif a.what == "rebuild-static":
        static_cxx()
        rebuild(a.spec, a.cache)
    elif a.what == "small":
        small(a.cache, a.static_cxx)
    else:
        separator(a.cache)
    stamp("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
