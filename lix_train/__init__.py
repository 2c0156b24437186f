"""LIX-Seg training half: data -> models -> losses -> engine -> distill.

Kept free of heavy imports so `python -m lix_train.<tool> --help` starts fast. Started as a tool
(`python -m lix_train.<tool>`) by a Python without the project's packages (not the `make setup`
virtual environment), it says so in one line and exits 2, instead of a ModuleNotFoundError from
deep inside an import. Imported as a library (lix_deploy's torch-free runtime uses lix_train.data
helpers), it checks nothing.
"""

import importlib.util as _importlib_util
import sys as _sys

__version__ = "0.1.0"

# Import name -> the package `make setup` installs (pyproject.toml dependencies).
REQUIRED = {"torch": "torch", "numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "pyyaml", "tqdm": "tqdm"}


def missing_packages() -> list[str]:
    """The required packages this Python cannot import (found without importing them)."""
    return [package for module, package in REQUIRED.items() if _importlib_util.find_spec(module) is None]


# While `python -m lix_train.X` locates X, sys.argv[0] is "-m" (only then: not under pytest or an import).
if _sys.argv[:1] == ["-m"]:
    _missing = missing_packages()
    if _missing:
        _sys.stderr.write(f"lix_train: error: this Python ({_sys.executable}) lacks {', '.join(_missing)}: run "
                          "`make setup` in the repository, then use .venv/bin/python (or activate .venv)\n")
        raise SystemExit(2)
