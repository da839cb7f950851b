"""Causal STFT framing: exact round trip, frames that end at their last sample, the periodic window sum."""

from __future__ import annotations

import pytest
import torch

from bsmamba2.model.framing import (
    analyse,
    causal_istft,
    causal_stft,
    envelope,
    left_pad,
    num_frames,
    synthesise,
)


@pytest.mark.parametrize(("n_fft", "hop"), [(2048, 441), (256, 64), (16, 5)])
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_round_trip_is_exact(n_fft: int, hop: int, n: int) -> None:
    x = torch.randn(2, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    X = causal_stft(x, n_fft, hop)
    assert X.shape == (2, 3, n_fft // 2 + 1, num_frames(n, n_fft, hop))
    torch.testing.assert_close(causal_istft(X, n_fft, hop, length=n), x, rtol=0, atol=1e-12)


def test_frame_t_ends_at_its_last_sample() -> None:
    """Changing sample s changes exactly the frames t with t·hop − P < s < (t + 1)·hop (a frame's first sample
    has window weight 0: periodic Hann)."""
    n_fft, hop, n = 64, 16, 400
    x = torch.randn(n, dtype=torch.float64)
    X = causal_stft(x, n_fft, hop)
    for s in (0, 15, 16, 200, 399):
        y = x.clone()
        y[s] += 1.0
        changed = (causal_stft(y, n_fft, hop) - X).abs().amax(dim=0) > 0  # (t,)
        t = torch.arange(X.shape[-1])
        expect = (t * hop - left_pad(n_fft, hop) < s) & (s < (t + 1) * hop)
        assert torch.equal(changed, expect), s


def test_envelope_is_the_window_sum_of_a_long_signal() -> None:
    n_fft, hop = 48, 10
    ones = torch.ones(500, dtype=torch.float64)
    spec = analyse(ones, n_fft, hop)  # frames starting at 0, hop, ...
    w_sum = synthesise(spec, n_fft, hop)  # windowed twice: Σ w²·1
    middle = w_sum[100:400]
    env = envelope(n_fft, hop, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(middle, env.repeat(30), rtol=0, atol=1e-12)


def test_istft_refuses_lengths_the_frames_do_not_cover() -> None:
    X = causal_stft(torch.randn(100), 64, 16)
    with pytest.raises(ValueError, match="cover"):
        causal_istft(X, 64, 16, length=10_000)
