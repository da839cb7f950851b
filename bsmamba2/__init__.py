"""bsmamba2: BSMamba2 music source separation (band-split dual-path bidirectional Mamba2), pure PyTorch."""

__version__ = "0.1.0"
