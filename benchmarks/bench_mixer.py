"""Launch-shape sweep of the kernel blocks' conv kernels (``mixer_triton.CONV_TILES``) at the paper's shapes.

Times the conv + SiLU forward and the backward's two passes (``conv_dact``: d out and the dw / db reduction;
``conv_dx``: the gather of dx) for a few tile shapes each, on both directions of the time path (2 × 310
sequences × 801 steps) and of the band path (2 × 4005 × 62), ch 1280 read in place in a 2320-wide bf16
projection, as the blocks run them. Every candidate's outputs are checked against the shipped shape's (a
tiling must not change the function); the fastest passing one per kernel (summed over both paths) is printed
and written to ``$OUT/mixer_tiles.json``, in the form ``BSMAMBA2_MIXER_TILES`` takes.

    python benchmarks/bench_mixer.py [--budget 90]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEV, Deadline, Report, attempt, cuda_time_ms, have_device, out_dir  # noqa: E402

SHAPES = {"time": (310, 801), "band": (4005, 62)}  # sequences per direction, steps
DI, GN, H, E = 1024, 128, 16, 2320
CANDIDATES: dict[str, list[tuple[int, ...]]] = {
    "conv_fwd": [(bl, bc, w) for bl, bc, w in itertools.product((32, 64), (64, 128, 256), (4, 8))],
    "conv_dact": [(32, bc, w, tpp) for bc, w, tpp in itertools.product((64, 128), (4, 8), (2, 8, 32))],
    "conv_dx": [(bl, bc, w) for bl, bc, w in itertools.product((32, 64), (64, 128, 256), (4, 8))],
}


def _inputs(n: int, l: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(0)
    ch = DI + 2 * GN

    def r(*s: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.randn(*s, device=DEV, generator=g).to(dtype)

    zx = r(2 * n, l, E)
    return dict(
        x=zx[..., DI : DI + ch], w=0.5 * r(2, ch, 4, dtype=torch.float32), b=0.1 * r(2, ch, dtype=torch.float32),
        gx=r(2 * n, l, DI), gb=r(2 * n, l, GN), gc=r(2 * n, l, GN), dzx=torch.empty_like(zx),
    )  # fmt: skip


def _run(mt: Any, kernel: str, cfg: tuple[int, ...], t: dict[str, torch.Tensor], n: int) -> Any:
    """One call of ``kernel`` with ``cfg`` (the other kernels at their shipped shapes); returns its outputs."""
    saved = dict(mt.CONV_TILES)
    mt.CONV_TILES[kernel] = cfg
    try:
        ch = DI + 2 * GN
        if kernel == "conv_fwd":
            return (mt.conv_fwd(t["x"], t["w"], t["b"], n),)
        dx = t["dzx"][..., DI : DI + ch]
        dw, db = mt.conv_bwd(t["x"], t["w"], t["b"], t["gx"], t["gb"], t["gc"], dx, n)
        return dx.clone(), dw, db
    finally:
        mt.CONV_TILES.clear()
        mt.CONV_TILES.update(saved)


def _time_bwd_pass(mt: Any, kernel: str, cfg: tuple[int, ...], t: dict[str, torch.Tensor], n: int) -> float:
    """ms of the whole backward with this pass's shape; the other pass at its shipped shape."""
    return cuda_time_ms(lambda: _run(mt, kernel, cfg, t, n), warmup_ms=10, rep_ms=40)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def sweep(rep: Report, dl: Deadline) -> dict[str, tuple[int, ...]]:
    from bsmamba2.model.mixers import mixer_triton as mt

    best: dict[str, tuple[int, ...]] = {}
    inputs = {name: _inputs(*shape) for name, shape in SHAPES.items()}
    for kernel, cands in CANDIDATES.items():
        shipped = mt.CONV_TILES[kernel]
        refs = {name: _run(mt, kernel, shipped, t, SHAPES[name][0]) for name, t in inputs.items()}
        totals: dict[tuple[int, ...], float] = {}
        for cfg in [shipped] + [c for c in cands if c != shipped]:
            if not dl.ok(5):
                rep.errors.append(f"{kernel}: sweep cut by the time budget at {cfg}")
                break
            row: dict[str, Any] = dict(kernel=kernel, config=str(cfg), shipped=cfg == shipped)
            total, ok = 0.0, True
            for name, t in inputs.items():
                n = SHAPES[name][0]
                outs = _run(mt, kernel, cfg, t, n)
                err = max(_rel(a, b) for a, b in zip(outs, refs[name]))
                ok = ok and err < 1e-3
                ms = _time_bwd_pass(mt, kernel, cfg, t, n)
                row[f"{name}_ms"] = ms
                row[f"{name}_err"] = err
                total += ms
            row.update(total_ms=total, ok=ok)
            rep.add("sweep", row)
            if ok:
                totals[cfg] = total
        if totals:
            best[kernel] = min(totals, key=lambda c: totals[c])
            rep.add("best", dict(kernel=kernel, config=str(best[kernel]), total_ms=totals[best[kernel]],
                                 shipped_ms=totals.get(shipped)))  # fmt: skip
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 90)))
    args = ap.parse_args(argv)
    if not have_device() or DEV.type != "cuda":
        print("bench_mixer: needs a CUDA GPU")
        return 0
    rep = Report("mixer")
    best = attempt(rep, "sweep", lambda: sweep(rep, Deadline(args.budget))) or {}
    (out_dir() / "mixer_tiles.json").write_text(json.dumps({k: list(v) for k, v in best.items()}))
    print("MIXER_TILES " + json.dumps({k: list(v) for k, v in best.items()}), flush=True)
    rep.table(
        "sweep", ["kernel", "config", "shipped", "time_ms", "band_ms", "total_ms", "time_err", "band_err", "ok"],
        "Conv kernels of the kernel blocks: launch shapes (BL, BC, warps[, tiles per program]), bf16, paper shapes",
    )  # fmt: skip
    rep.table("best", ["kernel", "config", "total_ms", "shipped_ms"], "Fastest passing shape per kernel")
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
