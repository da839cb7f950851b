"""Streaming a causal model: any split of the input into blocks gives the offline output delayed by the
stated latency; flush and reset; mono, stereo and other rates; bad blocks leave the stream untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bsmamba2.audio import resample
from bsmamba2.config import ModelConfig
from bsmamba2.errors import AudioError
from bsmamba2.model import build_model
from bsmamba2.model.mixers.base import NotStreamableError
from bsmamba2.streaming import CausalStream, StreamingSeparator


def _model(lookahead: int = 0, channels: int = 2, seed: int = 0, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig.tiny(causal=True, lookahead=lookahead, audio_channels=channels, **overrides)
    model = build_model(cfg).eval()
    with torch.no_grad():  # move every parameter off its initial value (norm weights 1, D 1, ...)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _offline(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(c, n) -> (s, c, latency + n): the offline causal output, delayed by the latency."""
    with torch.no_grad():
        y = model(x[None])[0]
    return torch.cat([torch.zeros(*y.shape[:-1], model.cfg.latency), y], dim=-1)


def _random_blocks(n: int, gen: torch.Generator, most: int) -> list[int]:
    """Block sizes summing to n: some 0 and 1 sample long, most anywhere up to ``most`` (mid-frame splits)."""
    out: list[int] = []
    while sum(out) < n:
        r = float(torch.rand((), generator=gen))
        k = 0 if r < 0.05 else 1 if r < 0.2 else int(torch.randint(2, most, (), generator=gen))
        out.append(min(k, n - sum(out)))
    return out


def _stream(stream: CausalStream, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, t = [], 0
    for k in sizes:
        y = stream.push(x[:, t : t + k])
        assert y.shape[-1] == k  # at the model's rate, as many samples out as in
        outs.append(y)
        t += k
    tail = stream.flush()
    assert tail.shape[-1] == stream.latency
    return torch.cat([*outs, tail], dim=-1)


@pytest.mark.parametrize(("lookahead", "channels"), [(0, 2), (2, 2), (1, 1)])
def test_any_block_split_equals_offline_delayed(lookahead: int, channels: int) -> None:
    model = _model(lookahead, channels)
    gen = torch.Generator().manual_seed(lookahead + channels)
    x = 0.5 * torch.randn(channels, 5003, generator=gen)  # not a multiple of the hop (64)
    expect = _offline(model, x)
    stream = CausalStream(model)
    for most in (40, 700, 3000):
        got = _stream(stream, x, _random_blocks(x.shape[-1], gen, most))
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-5)
    whole = _stream(stream, x, [x.shape[-1]])
    torch.testing.assert_close(whole, expect, rtol=0, atol=1e-5)


def test_one_sample_blocks_on_a_short_input() -> None:
    model = _model(1)
    x = 0.5 * torch.randn(2, 400, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        _stream(CausalStream(model), x, [1] * 400), _offline(model, x), rtol=0, atol=1e-5
    )


def test_flush_starts_a_new_stream_and_reset_drops_one() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(2, 1500, generator=gen), torch.randn(2, 900, generator=gen)
    stream = CausalStream(model)
    first = _stream(stream, a, [700, 800])
    second = _stream(stream, b, [900])  # after flush: as if the stream were new
    torch.testing.assert_close(first, _offline(model, a), rtol=0, atol=1e-5)
    torch.testing.assert_close(second, _offline(model, b), rtol=0, atol=1e-5)
    stream.push(a[:, :1234])
    stream.reset()  # the pending output of a is dropped, not carried into b
    assert stream.pushed == 0
    torch.testing.assert_close(_stream(stream, b, [450, 450]), _offline(model, b), rtol=0, atol=1e-5)


def test_separator_api_residual_and_latency() -> None:
    model = _model()
    sep = StreamingSeparator(model)
    assert sep.stems == ("vocals", "instrumental")
    assert sep.latency == model.cfg.n_fft - 1
    assert sep.latency_ms == pytest.approx(1000 * (model.cfg.n_fft - 1) / 44100)
    x = 0.5 * torch.randn(2, 3000, generator=torch.Generator().manual_seed(8))
    outs = [sep.push(x[:, :1111]), sep.push(x[:, 1111:].numpy()), sep.flush()]
    got = {k: torch.cat([o[k] for o in outs], dim=-1) for k in sep.stems}
    torch.testing.assert_close(got["vocals"], _offline(model, x)[0], rtol=0, atol=1e-5)
    delayed_mix = torch.cat([torch.zeros(2, sep.latency), x], dim=-1)
    torch.testing.assert_close(got["vocals"] + got["instrumental"], delayed_mix, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (22050, 1), (44100, 1)])
def test_other_rates_and_mono(rate: int, channels: int) -> None:
    """The stream equals resample(offline causal output of the resampled input, delayed) back at the input's
    rate, in the input's layout."""
    model = _model(seed=3)
    rng = np.random.default_rng(rate)
    x = (0.3 * rng.standard_normal((channels, 8000))).astype(np.float32)
    sep = StreamingSeparator(model, sample_rate=rate)
    outs, t = [], 0
    for k in rng.integers(1, 900, size=40):
        outs.append(sep.push(x[:, t : t + k]))
        t += int(k)
        if t >= x.shape[-1]:
            break
    outs.append(sep.flush())
    got = torch.cat([o["vocals"] for o in outs], dim=-1).numpy()
    x_model = resample(np.repeat(x[:, :t], 2, axis=0) if channels == 1 else x[:, :t], rate, 44100)
    ref = resample(_offline(model, torch.from_numpy(x_model))[0].numpy(), 44100, rate)
    ref = ref.mean(axis=0, keepdims=True) if channels == 1 else ref
    assert got.shape[0] == channels and abs(got.shape[-1] - ref.shape[-1]) <= 1
    n = min(got.shape[-1], ref.shape[-1])
    np.testing.assert_allclose(got[:, :n], ref[:, :n], rtol=0, atol=1e-5)


def test_bad_blocks_are_refused_and_leave_the_stream_as_it_was() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(9)
    x = 0.5 * torch.randn(2, 2500, generator=gen)
    sep = StreamingSeparator(model)
    outs = [sep.push(x[:, :1000])]
    nan = x[:, 1000:1300].clone()
    nan[1, 17] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        sep.push(nan)
    with pytest.raises(AudioError, match="2 channel"):
        sep.push(x[:1, 1000:1300])  # mono in the middle of a stereo stream
    with pytest.raises(AudioError, match="float"):
        sep.push((x[:, 1000:1300] * 32767).to(torch.int16))
    with pytest.raises(AudioError, match="channels"):
        sep.push(torch.zeros(3, 10))
    outs += [sep.push(x[:, 1000:]), sep.flush()]
    got = torch.cat([o["vocals"] for o in outs], dim=-1)
    torch.testing.assert_close(got, _offline(model, x)[0], rtol=0, atol=1e-5)


def test_bad_blocks_in_a_mono_stream() -> None:
    """A mono stream (its channel count taken from the first block) refuses a stereo block and an Inf sample
    mid-stream and carries on as if they had not been pushed; the output is the offline one of the mono
    input (downmixed model output: the model is stereo)."""
    model = _model(seed=5)
    x = 0.5 * torch.randn(1, 2400, generator=torch.Generator().manual_seed(10))
    sep = StreamingSeparator(model)
    outs = [sep.push(x[0, :700])]  # 1-D: mono
    assert sep.channels == 1
    with pytest.raises(AudioError, match="1 channel"):
        sep.push(x[:, 700:900].repeat(2, 1))
    inf = x[:, 700:900].clone()
    inf[0, 3] = float("inf")
    with pytest.raises(AudioError, match="Inf"):
        sep.push(inf)
    outs += [sep.push(x[:, 700:]), sep.flush()]
    got = torch.cat([o["vocals"] for o in outs], dim=-1)
    ref = _offline(model, x.repeat(2, 1))[0].mean(dim=0, keepdim=True)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_bidirectional_models_do_not_stream() -> None:
    with pytest.raises(NotStreamableError, match="block mode"):
        CausalStream(build_model(ModelConfig.tiny()))
    with pytest.raises(AudioError, match="1 or 2"):
        StreamingSeparator(_model(), channels=3)
