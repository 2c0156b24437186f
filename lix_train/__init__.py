"""LIX-Seg training half: data -> models -> losses -> engine -> distill.

Kept free of heavy imports so `python -m lix_train.<tool> --help` starts fast.
"""

__version__ = "0.1.0"
