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
