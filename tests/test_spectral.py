import pytest
import torch

from bsmamba2.spectral import istft, pad_to_min_length, stft


@pytest.mark.parametrize("n", [1025, 4410, 44101, 352800, 352799])
def test_round_trip(n: int) -> None:
    wave = torch.randn(2, 2, n)
    spec = stft(wave, 2048, 441)
    assert spec.shape == (2, 2, 1025, 1 + n // 441)
    back = istft(spec, 2048, 441, length=n)
    assert (back - wave).abs().max().item() < 1e-5


def test_official_frame_count_and_default_length() -> None:
    """8 s at 44.1 kHz: 801 frames, and the length-free inverse gives 441·800 = 352800 samples (§4)."""
    spec = stft(torch.randn(1, 352800))
    assert spec.shape[-1] == 801
    assert istft(spec).shape[-1] == 352800


def test_short_signal_padding() -> None:
    wave = torch.randn(2, 100)
    padded, n = pad_to_min_length(wave, 2048)
    assert n == 100 and padded.shape[-1] == 1025
    torch.testing.assert_close(padded[:, :100], wave)
    assert stft(padded).shape[-1] == 1 + 1025 // 441
