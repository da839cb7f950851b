"""Gate for GPU runs: does the fused "triton" SSD agree with the chunked reference on a model's real shapes?

Prints relative errors of y and of every input gradient (bf16 inputs) and exits 0 only if all are < 1e-2.
    python scripts/check_triton.py --dim 128 --expand 2 --headdim 32 --d-state 64 --batch 8
"""

from __future__ import annotations

import argparse
import sys

import torch

from bsmamba2.model.mixers.ssd import resolve_backend, ssd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--expand", type=int, default=4)
    ap.add_argument("--headdim", type=int, default=64)
    ap.add_argument("--d-state", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    resolve_backend("triton", torch.device("cuda"))
    h = args.dim * args.expand // args.headdim
    worst = 0.0
    for name, (nseq, length) in {"time": (args.batch * 62, 801), "band": (args.batch * 801, 62)}.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(nseq, length, h, args.headdim, device="cuda", generator=g).bfloat16()
        dt = (torch.rand(nseq, length, h, device="cuda", generator=g) * 0.1 + 1e-3).float()
        A = -torch.rand(h, device="cuda", generator=g) * 15 - 1
        B = torch.randn(nseq, length, 1, args.d_state, device="cuda", generator=g).bfloat16()
        C = torch.randn(nseq, length, 1, args.d_state, device="cuda", generator=g).bfloat16()
        D = torch.ones(h, device="cuda")
        ins = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
        ref_ins = [t.detach().double().requires_grad_() for t in ins]
        # The same bf16-rounded dy for both, so the comparison measures the kernel, not dy's rounding.
        dy = torch.randn(nseq, length, h, args.headdim, device="cuda", generator=g).bfloat16().float()
        y = ssd(*ins, backend="triton")
        yr = ssd(*ref_ins, backend="chunked", chunk_size=64)
        assert isinstance(y, torch.Tensor) and isinstance(yr, torch.Tensor)
        grads = torch.autograd.grad((y.float() * dy).sum(), ins)
        rgrads = torch.autograd.grad((yr * dy.double()).sum(), ref_ins)
        errs = {"y": (y.double() - yr).norm() / yr.norm()}
        for n, a, b in zip(("dx", "ddt", "dA", "dB", "dC", "dD"), grads, rgrads, strict=True):
            errs[n] = (a.double() - b).norm() / b.norm()
        line = " ".join(f"{k} {v.item():.1e}" for k, v in errs.items())
        print(f"{name} path ({nseq} x {length}, {h} heads): {line}", flush=True)
        worst = max(worst, *(v.item() for v in errs.values()))
    ok = worst < 1e-2 and worst == worst
    print("triton check:", "PASS" if ok else "FAIL", f"(worst {worst:.1e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
