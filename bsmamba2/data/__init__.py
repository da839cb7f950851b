"""Datasets: MUSDB18HQ / generic multitrack folders, the random-mix training sampler, and the synthetic corpus.

Submodules are imported on use (``bsmamba2.data.musdb``, ``.sampler``, ``.synth``) so importing the package
stays cheap.
"""
