"""LIX-Seg deployment half: export -> calib -> build_engine -> runtime (torch-free) -> benchmark, bag, doctor.

Nothing in `lix_train` imports this package; `lix_deploy.runtime` never imports torch.
"""

__version__ = "0.1.0"
