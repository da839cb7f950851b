"""Block mode: any model as a stream of short blocks; equals the chunked separation delayed by the latency."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.apply import apply_model
from bsmamba2.config import ModelConfig
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.streaming import StreamingSeparator
from bsmamba2.streaming.blocks import BlockStream


def _pushes(stream: BlockStream, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, t = [], 0
    for k in sizes:
        y = stream.push(x[:, t : t + k])
        assert y.shape[-1] == k
        outs.append(y)
        t += k
    return torch.cat([*outs, stream.flush()], dim=-1)


@pytest.mark.parametrize("mixer", ["mamba2", "roformer"])
@pytest.mark.parametrize("n", [2600, 300])  # several chunks; shorter than one chunk
def test_block_stream_equals_chunked_separation_delayed(mixer: str, n: int) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(mixer=mixer)).eval()
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(2, n, generator=gen)
    with torch.no_grad():
        chunked = apply_model(model, x, segment=800, overlap=200 / 800, batch_size=1)
    stream = BlockStream(model, block=600, lookahead=200)
    assert stream.latency == 799
    expect = torch.cat([torch.zeros(1, 2, 799), chunked], dim=-1)
    sizes: list[int] = []
    while sum(sizes) < n:  # random pushes, 0 to 499 samples: across chunk boundaries and inside chunks
        sizes.append(min(int(torch.randint(0, 500, (), generator=gen)), n - sum(sizes)))
    torch.testing.assert_close(_pushes(stream, x, sizes), expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        _pushes(stream, x, [1] * 5 + [n - 5]), expect, rtol=0, atol=1e-6
    )  # after flush


def test_separator_in_block_mode() -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig.tiny(mixer="roformer")).eval()
    sep = StreamingSeparator(model, block=0.02, lookahead=0.005)
    engine = sep.engine
    assert isinstance(engine, BlockStream) and (engine.block, engine.lookahead) == (882, 220)
    assert sep.latency == 882 + 220 - 1
    x = torch.randn(1, 3000)  # mono into a stereo model
    outs = [sep.push(x[:, :1000]), sep.push(x[:, 1000:]), sep.flush()]
    vocals = torch.cat([o["vocals"] for o in outs], dim=-1)
    assert vocals.shape == (1, 3000 + sep.latency)
    with torch.no_grad():
        chunked = apply_model(model, x.repeat(2, 1), segment=1102, overlap=220 / 1102, batch_size=1)
    torch.testing.assert_close(vocals[:, sep.latency :], chunked[0].mean(0, keepdim=True), rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="causal"):
        StreamingSeparator(build_model(ModelConfig.tiny(causal=True)), block=1.0)
    with pytest.raises(UserError, match="block"):
        StreamingSeparator(model, block=-1.0)
