"""Per-tensor errors of the Triton SSD (one direction and both in one launch) and of the kernel block against
the plain-PyTorch reference at short lengths, float32 and bf16, on a GPU. (Session 12 ran it: the "blown-up"
1-step gradient was dA, exactly zero in the reference, divided by a 1e-30 floor; the relative errors here keep
that floor, so read dA at L = 1 as an absolute error.)

    python scripts/ssd_short_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bsmamba2.model.mixers.ssd import ssd_chunked  # noqa: E402
from bsmamba2.model.mixers.ssd_triton import ssd_triton, ssd_triton_bidirectional  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def ssd_case(
    L: int, dtype: torch.dtype, bidir: bool, b: int = 3, h: int = 16, p: int = 64, n: int = 128
) -> str:
    g = torch.Generator().manual_seed(L)
    bb = 2 * b if bidir else b
    x = torch.randn(bb, L, h, p, generator=g)
    dt = torch.rand(bb, L, h, generator=g) * 0.1 + 0.01
    A = -torch.rand(2 if bidir else 1, h, generator=g) - 0.5
    B = torch.randn(bb, L, 1, n, generator=g) * 0.3
    C = torch.randn(bb, L, 1, n, generator=g) * 0.3
    D = torch.randn(2 if bidir else 1, h, generator=g)
    dy = torch.randn(bb, L, h, p, generator=g)
    outs = []
    for fn in ("ref", "triton"):
        ins = [t.double() if fn == "ref" else t.cuda() for t in (x, dt, A, B, C, D)]
        ins = [t.to(dtype) if fn != "ref" and i in (0, 3, 4) else t for i, t in enumerate(ins)]
        ins = [t.detach().requires_grad_(True) for t in ins]
        xx, dd, AA, BB, CC, DD = ins
        if fn == "ref":
            if bidir:
                f = ssd_chunked(xx[:b], dd[:b], AA[0], BB[:b], CC[:b], DD[0])
                r = ssd_chunked(
                    *(t[b:].flip(1) for t in (xx, dd)), AA[1], *(t[b:].flip(1) for t in (BB, CC)), DD[1]
                )
                y = torch.cat([f, r.flip(1)])
            else:
                y = ssd_chunked(xx, dd, AA[0], BB, CC, DD[0])
        else:
            y = (
                ssd_triton_bidirectional(xx, dd, AA, BB, CC, DD)
                if bidir
                else ssd_triton(xx, dd, AA[0], BB, CC, DD[0])
            )
        (y.double() * dy.to(y.device).double()).sum().backward()
        outs.append([y.detach().cpu()] + [t.grad.detach().cpu() for t in ins])
    names = ["y", "dx", "ddt", "dA", "dB", "dC", "dD"]
    return " ".join(f"{nm} {rel(a, w):.1e}" for nm, a, w in zip(names, outs[1], outs[0]))


def main() -> None:
    torch.set_float32_matmul_precision("highest")
    for bidir in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            for L in (1, 2, 3, 17, 62, 65):
                print(f"ssd bidir={bidir} {str(dtype)[6:]} L={L}: {ssd_case(L, dtype, bidir)}", flush=True)
    import test_mixer_triton as t

    for L in (1, 2):
        block, ref = t._blocks(*t.PAPER, "all", "cuda")
        g = torch.Generator().manual_seed(L)
        x = torch.randn(3, L, 256, generator=g).cuda()
        dy = torch.randn(3, L, 256, generator=g).cuda()
        want = t._run(ref, x.double(), dy, False)
        got = t._run(block, x, dy, False)
        names = ["y", "dx"] + [nm for nm, _ in block.named_parameters()]
        bad = [(nm, f"{t._rel(a, b):.1e}") for nm, a, b in zip(names, got, want) if not t._rel(a, b) < 1e-4]
        print(f"kernel block fp32 L={L}: bad {bad}", flush=True)


if __name__ == "__main__":
    main()
