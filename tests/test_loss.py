"""The training loss (paper Eq. 8, OFFICIAL_SPEC §5) on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bsmamba2.train.config import LossConfig
from bsmamba2.train.loss import multi_resolution_stft_l1, round_trip, separation_loss

WINDOWS = (4096, 2048, 1024, 512, 256)


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_identical_signals_give_zero() -> None:
    x = _noise(2, 1, 2, 8000)
    terms = separation_loss(x, x, LossConfig(round_trip_target=False))
    assert terms.total.item() == 0.0
    assert terms.time.item() == 0.0 and terms.stft.item() == 0.0


def test_round_tripped_estimate_matches_round_tripped_target() -> None:
    # The official target is s~ = iSTFT(STFT(s)); an estimate equal to s~ has (numerically) zero loss.
    s = _noise(1, 2, 2, 9000)  # 9000 is not a multiple of the hop: the round trip must keep the length
    s_tilde = round_trip(s, 2048, 441)
    assert s_tilde.shape == s.shape
    torch.testing.assert_close(s_tilde, s, atol=1e-5, rtol=0)  # the round trip is (nearly) the identity
    assert separation_loss(s_tilde, s).total.item() < 1e-5
    # ... while a wrong estimate is far from zero
    assert separation_loss(torch.zeros_like(s), s).total.item() > 1.0


def _stft_l1_of_constant(c: float, win: int, min_n_fft: int = 2048) -> float:
    """Hand computation: a constant signal c (reflect padding keeps it constant) gives identical frames
    c·w[n] (w = periodic Hann of length win, centred in n_fft zeros), so the mean over frames and bins of
    |STFT| is the mean over the one-sided bins of |DFT(c·w)|."""
    n_fft = max(win, min_n_fft)
    n = np.arange(win)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    padded = np.zeros(n_fft)
    left = (n_fft - win) // 2
    padded[left : left + win] = w
    return float(np.abs(np.fft.rfft(c * padded)).mean())  # n_fft // 2 + 1 one-sided bins


def test_constant_offset_matches_hand_computation() -> None:
    c = 0.25
    s = _noise(1, 1, 2, 6000, seed=1)
    terms = separation_loss(s + c, s, LossConfig(round_trip_target=False))
    # Time term: mean |c| = c. STFT is linear, so STFT(s + c) − STFT(s) = STFT(c).
    assert terms.time.item() == pytest.approx(c, rel=1e-6)
    expected_stft = sum(_stft_l1_of_constant(c, w) for w in WINDOWS)
    assert terms.stft.item() == pytest.approx(expected_stft, rel=1e-4)
    assert terms.total.item() == pytest.approx(10 * c + expected_stft, rel=1e-4)
    # For w >= 2048 the window fills the frame: |X_0| = c·w/2, |X_1| = c·w/4, all other bins 0.
    for w in (4096, 2048):
        closed_form = c * (w / 2 + w / 4) / (w // 2 + 1)
        assert _stft_l1_of_constant(c, w) == pytest.approx(closed_form, rel=1e-9)


def test_single_window_matches_direct_stft() -> None:
    a, b = _noise(2, 5000, seed=2), _noise(2, 5000, seed=3)
    win = 512
    kw = dict(n_fft=2048, hop_length=147, win_length=win, window=torch.hann_window(win), return_complex=True)
    expected = (torch.stft(a, **kw) - torch.stft(b, **kw)).abs().mean()  # type: ignore[call-overload]
    got = multi_resolution_stft_l1(a, b, windows=(win,))
    torch.testing.assert_close(got, expected)


def test_weights_and_gradient() -> None:
    s = _noise(1, 1, 2, 4096, seed=4)
    est = (s + 0.1 * _noise(1, 1, 2, 4096, seed=5)).requires_grad_(True)
    cfg = LossConfig(lambda_time=3.0, stft_weight=0.5)
    terms = separation_loss(est, s, cfg)
    assert terms.total.item() == pytest.approx(3.0 * terms.time.item() + 0.5 * terms.stft.item(), rel=1e-6)
    terms.total.backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        separation_loss(torch.zeros(1, 1, 2, 4096), torch.zeros(1, 2, 2, 4096))
