"""Registers, spills and shared memory of every SSD kernel, compiled ahead of time for a GPU that is not here.

Compiles each Triton kernel of ``ssd_triton`` / ``ssd_triton_split`` for the paper's head layout (head dim 64,
d_state 128, bf16 operands) with the installed Triton for a chosen architecture (default sm_90a, Hopper), and runs
the ptxas that ships with Triton with ``-v`` on the PTX: what ptxas reports is what the GPU would run, so the
register pressure of a kernel design can be read without a GPU (its speed cannot).

    python benchmarks/ssd_resources.py                  # markdown table on stdout
    python benchmarks/ssd_resources.py --arch 100 --json out.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from bsmamba2.model.mixers import ssd_triton as st  # noqa: E402
from bsmamba2.model.mixers import ssd_triton_split as sp  # noqa: E402

# pointer arguments that are float32 in the library's calls; every other pointer is the activations' bf16
FP32_PTRS = {
    "dt_ptr", "A_ptr", "D_ptr", "ddt_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr",
    "init_ptr", "dfinal_ptr", "dinit_ptr", "final_ptr",
}  # fmt: skip
KERNELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "fwd_single": (st._fwd_single_kernel, dict(HAS_D=True)),
    "bwd_single": (st._bwd_single_kernel, dict(HAS_D=True)),
    "fwd_chunked": (st._fwd_chunked_kernel, dict(HAS_D=True, HAS_INIT=False, STORE_FINAL=False)),
    "bwd_chunked": (st._bwd_chunked_kernel, dict(HAS_D=True, HAS_INIT=False, HAS_DFINAL=False)),
    "sweeps": (sp._sweeps_kernel, dict(HAS_INIT=False, HAS_DFINAL=False)),
    "bwd_chunk": (sp._bwd_chunk_kernel, dict(HAS_D=True)),
}
SINGLE = {"fwd_single", "bwd_single"}


def ptxas_path(arch: int) -> str:
    """The ptxas Triton ships (the newer of its two where there are two: it must read Triton's PTX version)."""
    base = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (base / name).exists():
            return str(base / name)
    raise SystemExit(f"no ptxas under {base}")


def compile_one(name: str, chunk: int, warps: int, arch: int, p: int = 64, n: int = 128) -> dict[str, Any]:
    """One kernel at head dim ``p``, d_state ``n``, chunk ``chunk`` (the single-chunk kernels: the band path's
    64-step tile), ``warps`` warps: ptxas's registers, spills and stack, and Triton's shared memory."""
    fn, flags = KERNELS[name]
    params = list(inspect.signature(fn.fn).parameters)
    const = dict(T=chunk, BP=p, BN=n, DOT=tl.bfloat16, PREC="ieee", REV=True, **flags)
    sig = {
        k: "constexpr"
        if k in const
        else ("*fp32" if k in FP32_PTRS else "*bf16")
        if k.endswith("_ptr")
        else "i32"
        for k in params
    }
    src = ASTSource(fn=fn, signature=sig, constexprs={(params.index(k),): v for k, v in const.items()})
    suffix = "a" if arch == 90 else ""
    kern = triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": 1}
    )
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        Path(ptx).write_text(kern.asm["ptx"])
        out = subprocess.run(
            [ptxas_path(arch), "-v", f"--gpu-name=sm_{arch}{suffix}", ptx, "-o", os.path.join(d, "k.cubin")],
            capture_output=True,
            text=True,
        )
    log = out.stderr

    def num(pattern: str) -> int | None:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else None

    mma = kern.asm["ptx"].count("wgmma.mma_async") + kern.asm["ptx"].count("mma.sync")
    return dict(
        kernel=name,
        chunk=chunk,
        warps=warps,
        registers=num(r"Used (\d+) registers"),
        spill_stores_B=num(r"(\d+) bytes spill stores"),
        spill_loads_B=num(r"(\d+) bytes spill loads"),
        stack_B=num(r"(\d+) bytes stack frame"),
        shared_KiB=round(getattr(kern.metadata, "shared", 0) / 1024, 1),
        mma_in_ptx=mma,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90 = Hopper)")
    ap.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated kernel names")
    ap.add_argument("--warps", default="4,8")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for name in args.kernels.split(","):
        for warps in (int(w) for w in args.warps.split(",")):
            for chunk in (64,) if name in SINGLE else (32, 64):
                try:
                    rows.append(compile_one(name, chunk, warps, args.arch))
                except Exception as e:  # a compile failure is a result too
                    rows.append(
                        dict(kernel=name, chunk=chunk, warps=warps, error=f"{type(e).__name__}: {e}"[:200])
                    )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    cols = [
        "kernel",
        "chunk",
        "warps",
        "registers",
        "spill_stores_B",
        "spill_loads_B",
        "stack_B",
        "shared_KiB",
        "mma_in_ptx",
    ]
    print(f"Triton {triton.__version__}, sm_{args.arch}, head dim 64, d_state 128, bf16 operands\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
