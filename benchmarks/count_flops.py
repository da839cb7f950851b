"""Forward FLOPs of a model per clip, counted by ``torch.utils.flop_counter`` on the meta device (no data, no
GPU, seconds on a CPU). The spectrogram model (``forward_spec``) is counted; the STFT/iSTFT around it is
negligible. The SSD scans are counted in the chunked reference form (the kernel's products are the same).

    python benchmarks/count_flops.py [--seconds 8]

bench_train.py uses ``forward_tflops`` for its "useful TFLOP/s" column (3 × forward per training step).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsmamba2.config import ModelConfig  # noqa: E402
from bsmamba2.model import build_model  # noqa: E402


@functools.lru_cache
def forward_tflops(cfg: ModelConfig, seconds: float = 8.0) -> float:
    """TFLOP of one forward pass over one stereo clip of ``seconds``."""
    model = build_model(cfg, backend="chunked").to("meta").eval()
    frames = 1 + int(round(seconds * cfg.sample_rate)) // cfg.hop_length
    X = torch.randn(1, cfg.audio_channels, cfg.n_bins, frames, dtype=torch.complex64, device="meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.forward_spec(X)
    return fc.get_total_flops() / 1e12


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    for name, cfg in (
        ("BSMamba2 (paper)", ModelConfig.paper()),
        ("BS-RoFormer (paper)", ModelConfig.roformer_paper()),
    ):
        print(f"{name}: {forward_tflops(cfg, args.seconds):.3f} TFLOP forward per {args.seconds:g} s clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
