"""The engine room: tiny stand-ins for models, distillers and data are in helpers/engine_fakes.py."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread for the test (deterministic, and immune to a busy shared CPU), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
