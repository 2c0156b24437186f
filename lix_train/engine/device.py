"""Device choice and the CUDA-only speed features (AMP, channels-last) behind one object.

The trainer never asks "am I on CUDA?": it asks the Runtime for an autocast context and a
GradScaler, and those are no-ops on CPU. Requests that cannot be honoured on the chosen device
are turned off with one log line rather than silently or with a crash.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def select_device(preference: str = "auto") -> torch.device:
    """"auto" -> CUDA when present else CPU; "cuda" without a GPU is an error that says so."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={preference!r} is not one of 'auto', 'cpu', 'cuda'")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}); use device=auto or device=cpu")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@dataclass(frozen=True)
class Runtime:
    """Where tensors live and which precision / layout features are active there."""

    device: torch.device
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    channels_last: bool = False

    def autocast(self):
        """Autocast context for forward passes (a null context when AMP is off)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16 AMP; a disabled (pass-through) scaler otherwise."""
        enabled = self.amp and self.amp_dtype == torch.float16
        return torch.amp.GradScaler(self.device.type, enabled=enabled)


def make_runtime(device: torch.device, amp: bool, amp_dtype: str = "float16", channels_last: bool = False) -> Runtime:
    """A Runtime with AMP and channels-last enabled only where they work and help (CUDA)."""
    if amp_dtype not in _DTYPES:
        raise ValueError(f"amp_dtype={amp_dtype!r} is not one of {', '.join(_DTYPES)}")
    on_cuda = device.type == "cuda"
    if amp and not on_cuda:
        log.info("AMP disabled: mixed precision needs CUDA, running in float32 on %s", device)
        amp = False
    if amp and amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        log.info("AMP bfloat16 not supported by this GPU: using float16 with a GradScaler")
        amp_dtype = "float16"
    return Runtime(device=device, amp=amp, amp_dtype=_DTYPES[amp_dtype], channels_last=channels_last and on_cuda)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity where the OS tells, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def loader_workers(requested: int, processes: int = 1) -> int:
    """`requested` loader workers, at most the cores left beside the training processes.

    A preset sized for a workstation (8 workers) must not oversubscribe a 2-core machine; the
    data stream does not depend on the worker count (augmentation is seeded per sample), so
    capping it changes speed only.
    """
    return max(0, min(requested, available_cpus() // max(1, processes) - 1))
