"""Checkpoints that survive crashes and refuse to load into the wrong network.

Layout of a checkpoint (a dict saved with torch.save, loadable with weights_only=True):

    format        "lix-seg-checkpoint"; version  1
    signature     {"name", "config", "num_classes"} of the trained network (model_signature)
    iteration     optimizer steps completed
    model         state_dict of the trained network (the student when distilling)
    extra         {name: state_dict} of other trained modules (e.g. the DWC); empty if none
    optimizer / scheduler / scaler   their state_dicts (absent in weights-only files)
    rng           per-rank RNG states (rng.capture_rng_state), index = rank
    config        the run's resolved config as a plain dict
    metrics       last evaluation results, last losses

Writes are atomic: the file is written to a temporary name in the same directory, flushed and
fsynced, then renamed over the target, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT = "lix-seg-checkpoint"
VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
_ITER_FILE = re.compile(r"iter_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, not ours, or for a different network."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def model_signature(name: str, config: Mapping[str, Any], num_classes: int) -> dict:
    """What identifies an architecture: model name, its constructor config, class count."""
    return {"name": str(name), "config": dict(config), "num_classes": int(num_classes)}


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, tuple):
        value = list(value)
    return {prefix: value}


def signature_differences(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Human-readable differences, e.g. "config.width: checkpoint 0.5, model 0.25"."""
    a, b = _flatten(stored, ""), _flatten(expected, "")
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, missing), b.get(key, missing)
        if left != right:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            diffs.append(f"{key}: checkpoint {show(left)}, model {show(right)}")
    return diffs


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, then os.replace; the temp is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (not possible on every platform / filesystem)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def build_checkpoint(
    *,
    model: nn.Module,
    signature: Mapping[str, Any],
    iteration: int,
    extra_modules: Mapping[str, nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: list | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict:
    """The checkpoint dict (see the module docstring); optional parts are left out when None."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "signature": dict(signature),
        "iteration": int(iteration),
        "model": model.state_dict(),
        "extra": {name: module.state_dict() for name, module in (extra_modules or {}).items()},
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
    }
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            ckpt[key] = obj.state_dict()
    if rng is not None:
        ckpt["rng"] = list(rng)
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file; CheckpointError says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        raise CheckpointError(path, f"not a readable LIX-Seg checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(path, f"not a LIX-Seg checkpoint (no format={FORMAT!r} marker; found {keys})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(path, f"checkpoint version {ckpt.get('version')!r}, this code reads version {VERSION}")
    return ckpt


def check_signature(ckpt: Mapping[str, Any], expected: Mapping[str, Any], path: str | Path) -> None:
    """Raise CheckpointError naming every differing field when the architectures differ."""
    diffs = signature_differences(ckpt["signature"], expected)
    if diffs:
        raise CheckpointError(path, "architecture / class-count mismatch: " + "; ".join(diffs))


def _load_state(module: nn.Module, state: Mapping[str, Any], what: str, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(path, f"{what} state does not fit: {str(err)[:500]}") from None


def restore_checkpoint(
    ckpt: Mapping[str, Any],
    path: str | Path,
    *,
    model: nn.Module,
    signature: Mapping[str, Any] | None = None,
    extra_modules: Mapping[str, nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> None:
    """Load the states of a validated checkpoint into the given objects (those that are not None).

    With `extra_modules` given, their names must match the checkpoint's exactly (a resumed
    distillation must get its DWC back); None skips them (evaluation and export need only the model).
    """
    path = Path(path)
    if signature is not None:
        check_signature(ckpt, signature, path)
    _load_state(model, ckpt["model"], "model", path)
    if extra_modules is not None:
        stored_extra = ckpt.get("extra", {})
        if set(stored_extra) != set(extra_modules):
            raise CheckpointError(path, f"extra modules differ: checkpoint has {sorted(stored_extra)}, "
                                        f"the run has {sorted(extra_modules)}")
        for name, module in extra_modules.items():
            _load_state(module, stored_extra[name], f"extra module {name!r}", path)
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if key not in ckpt:
            raise CheckpointError(path, f"has no {key} state (a weights-only file cannot resume training)")
        try:
            obj.load_state_dict(ckpt[key])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(path, f"{key} state does not fit: {str(err)[:300]}") from None


def load_model_weights(path: str | Path, model: nn.Module, signature: Mapping[str, Any] | None = None,
                       map_location: str | torch.device = "cpu") -> dict:
    """Load only the trained network's weights (evaluation, export); returns the checkpoint."""
    ckpt = load_checkpoint(path, map_location)
    restore_checkpoint(ckpt, path, model=model, signature=signature)
    return ckpt


class CheckpointDir:
    """run_dir/checkpoints: latest.pt, best.pt, and optionally the last k iter_XXXXXXX.pt files."""

    def __init__(self, directory: str | Path, keep_last: int = 0):
        self.directory = Path(directory)
        self.keep_last = keep_last

    @property
    def latest(self) -> Path:
        return self.directory / LATEST

    @property
    def best(self) -> Path:
        return self.directory / BEST

    def save(self, ckpt: dict) -> Path:
        """Write latest.pt atomically; keep an iteration copy when keep_last > 0 and prune older ones."""
        atomic_torch_save(ckpt, self.latest)
        if self.keep_last > 0:
            numbered = self.directory / f"iter_{ckpt['iteration']:07d}.pt"
            numbered.unlink(missing_ok=True)
            try:
                os.link(self.latest, numbered)  # same bytes, no second write
            except OSError:
                shutil.copy2(self.latest, numbered)
            for old in self.numbered()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        return self.latest

    def save_best(self, ckpt: dict) -> Path:
        return atomic_torch_save(ckpt, self.best)

    def numbered(self) -> list[Path]:
        """iter_XXXXXXX.pt files, oldest first."""
        files = [p for p in self.directory.glob("iter_*.pt") if _ITER_FILE.search(p.name)]
        return sorted(files, key=lambda p: int(_ITER_FILE.search(p.name).group(1)))
