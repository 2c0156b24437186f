"""Where things are, for tests that read repository files or start Python subprocesses."""

from __future__ import annotations

from pathlib import Path

HELPERS = Path(__file__).resolve().parent  # tests/helpers: tests/conftest.py puts it on sys.path
ROOT = HELPERS.parents[1]  # the repository
