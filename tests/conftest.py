"""Shared by every room of the suite: puts tests/helpers/ on sys.path, so tests import its plain helper modules
by name (`from engine_fakes import TinyNet`)."""

from __future__ import annotations

import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))
