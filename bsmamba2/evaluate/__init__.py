"""Evaluation: the paper's metrics (uSDR, cSDR), its studies (input length, vocal-region duration), the vocal
leakage where the reference has no voice, and the ``bsmamba2 evaluate`` command."""
