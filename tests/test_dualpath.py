"""``model.dualpath.run_sequences``: CPU inference runs a pass in slices of whole sequences (bounded
memory) and gives what the whole pass gives; training and tracing run it whole."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model, dualpath


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.lin(x)


def test_inference_runs_slices_of_whole_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dualpath, "CPU_INFERENCE_TOKENS", 50)
    block, x = Recorder(), torch.randn(23, 10, 4)
    with torch.no_grad():
        y = dualpath.run_sequences(block, x)
    assert block.shapes == [(5, 10, 4)] * 4 + [(3, 10, 4)]  # 50 tokens = 5 sequences of 10
    torch.testing.assert_close(y, block.lin(x).detach())
    block.shapes.clear()
    dualpath.run_sequences(block, x)  # grad enabled (training): one call
    assert block.shapes == [(23, 10, 4)]


def test_sliced_model_equals_the_whole_model(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(hop_length=128)).eval()
    x = 0.1 * torch.randn(2, 2, 8192)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(dualpath, "CPU_INFERENCE_TOKENS", 64)
        sliced = model(x)
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)


class Scale(nn.Module):
    """A stand-in prenorm block: y = x · s (flipped along the sequence with ``flip``)."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        return (x.flip(1) * self.s).flip(1) if flip else x * self.s


@pytest.mark.parametrize("fused", [True, False], ids=["onednn", "plain"])
def test_the_cpu_merge_is_the_official_linear(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """BidirectionalBlock on the CPU without grad merges through onednn's products on prepared weights:
    x + Linear([f ; b]) as the reference computes it, fp32 to rounding, bf16 autocast to 1e-2; the
    prepared weights follow an in-place weight update."""
    from bsmamba2.model import onednn

    monkeypatch.setattr(onednn, "ENABLED", fused)
    torch.manual_seed(0)
    block = dualpath.BidirectionalBlock(16, lambda: Scale(0.5))
    x = torch.randn(3, 7, 16)
    ref = x + block.linear(torch.cat([x * 0.5, x * 0.5], dim=-1)).detach()
    with torch.no_grad():
        assert dualpath.cpu_inference(x)
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = block(x)
        assert float((y16.float() - ref).norm() / ref.norm()) < 1e-2
        block.linear.weight.mul_(2.0)
        ref2 = x + block.linear(torch.cat([x * 0.5, x * 0.5], dim=-1))
        torch.testing.assert_close(block(x), ref2, rtol=1e-5, atol=1e-5)
