"""CUDA-graph replay (bsmamba2.cudagraph): off CUDA the model itself; on CUDA the same separation as eager
(the padded last batch aside, within fp32 rounding), captured once per shape and replayed after."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.apply import apply_model
from bsmamba2.config import ModelConfig
from bsmamba2.cudagraph import CudaGraphModel, with_cuda_graphs
from bsmamba2.model import build_model


def test_off_cuda_the_model_is_unchanged() -> None:
    model = build_model(ModelConfig.tiny()).eval()
    assert with_cuda_graphs(model) is model
    wrapped = CudaGraphModel(model)
    x = torch.randn(2, 2, 4000) * 0.1
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(x))
    assert wrapped.fused and wrapped.cfg is model.cfg and not wrapped._graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replay_matches_eager_on_cuda() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(), device="cuda").eval()
    wrapped = with_cuda_graphs(model)
    assert isinstance(wrapped, CudaGraphModel)
    mix = torch.randn(2, 44100 * 3, device="cuda") * 0.1
    kw = dict(segment=22050, overlap=0.25, batch_size=3)
    want = apply_model(model, mix, **kw)
    got = apply_model(wrapped, mix, **kw)
    again = apply_model(wrapped, mix, **kw)  # replays the graph captured above
    assert len(wrapped._graphs) == 1 and not wrapped._failed
    assert torch.equal(got, again)
    assert ((got - want).norm() / want.norm()) < 1e-4
