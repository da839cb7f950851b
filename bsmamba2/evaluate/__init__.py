"""Evaluation: the paper's metrics (uSDR, cSDR), its studies (input length, vocal-region duration) and the
``bsmamba2 evaluate`` command."""
