"""The one table of inference backends: name -> artefact suffixes, runtime factory, builder.

The runtime (`Segmenter`, `backend_for_artifact`) and `python -m lix_deploy.build_engine` (`default_out`,
the build itself) both dispatch through it, and `BACKENDS` (every `--backend` / `backend=` choice) is
read from it. Entries name their code by import path, imported only when used, so this module imports
nothing (no onnx, onnxruntime, tensorrt, torch): the vehicle never loads a builder.

A backend is one new file (two if it also builds artefacts) plus one line:

* `open_backend(path, options) -> (Backend, ArtifactInfo)` in `lix_deploy/runtime/backends/<name>_backend.py`
  (options: `runtime.backends.base.BackendOptions`), and, if it builds artefacts,
  `build_candidate(request, watch, report) -> Path` in `lix_deploy/builders/<name>_build.py`
  (request: `builders.candidate.CandidateRequest`);
* one `register(BackendEntry(...))` line at the end of this file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["AUTO", "BACKENDS", "BackendEntry", "register", "unregister", "names", "entry", "entry_for_suffix",
           "suffixes", "runtime_factory", "builder"]

AUTO = "auto"  # the runtime picks from the file's suffix, build_engine from the machine


@dataclass(frozen=True)
class BackendEntry:
    """One backend.

    name: what `--backend` / `backend=` take.
    suffixes: the artefact suffixes it runs, lower case; `auto` routes them to it; its builder writes the first.
    runtime: "module:function" of its runtime factory, `(path, BackendOptions) -> (Backend, ArtifactInfo)`.
    builder: module whose `build_candidate(request, watch, report) -> Path` writes an artefact (None: builds none).
    needs: what it runs, said when it is handed another backend's artefact.
    """

    name: str
    suffixes: tuple[str, ...]
    runtime: str
    builder: str | None = None
    needs: str = ""


_TABLE: dict[str, BackendEntry] = {}


def register(new: BackendEntry) -> BackendEntry:
    """Add a backend; its name and suffixes must be new."""
    if new.name == AUTO or new.name in _TABLE:
        raise ValueError(f"backend name {new.name!r} is taken")
    if not new.suffixes or any(s != s.lower() or not s.startswith(".") for s in new.suffixes):
        raise ValueError(f"backend {new.name!r}: suffixes must be lower-case '.ext' names, got {new.suffixes!r}")
    for suffix in new.suffixes:
        owner = entry_for_suffix(suffix)
        if owner is not None:
            raise ValueError(f"backend {new.name!r}: suffix {suffix} already belongs to backend {owner.name!r}")
    _TABLE[new.name] = new
    return new


def unregister(name: str) -> None:
    """Remove a registered backend (tests register fakes)."""
    entry(name)
    del _TABLE[name]


def names() -> tuple[str, ...]:
    """The registered backends, in registration order (without "auto")."""
    return tuple(_TABLE)


def entry(name: str) -> BackendEntry:
    try:
        return _TABLE[name]
    except KeyError:
        raise ValueError(f"backend={name!r} is not one of {', '.join(BACKENDS)}") from None


def entry_for_suffix(suffix: str) -> BackendEntry | None:
    """The backend that runs files ending in `suffix` (any case), or None."""
    return next((e for e in _TABLE.values() if suffix.lower() in e.suffixes), None)


def suffixes() -> tuple[str, ...]:
    """Every registered artefact suffix."""
    return tuple(s for e in _TABLE.values() for s in e.suffixes)


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def runtime_factory(name: str) -> Callable[..., tuple[Any, Any]]:
    """The backend's `open_backend(path, options) -> (Backend, ArtifactInfo)`, imported now."""
    return _resolve(entry(name).runtime)


def builder(name: str) -> ModuleType:
    """The backend's builder module (it has `build_candidate`), imported now."""
    found = entry(name)
    if found.builder is None:
        raise ValueError(f"backend {name!r} runs artefacts but builds none")
    return _resolve(found.builder)


class _Names(Sequence):
    """("auto", every registered name), read when used, so a backend registered later is a choice everywhere."""

    def _names(self) -> tuple[str, ...]:
        return (AUTO,) + names()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(_TABLE) + 1

    def __eq__(self, other: object) -> bool:
        return self._names() == tuple(other) if isinstance(other, (tuple, list, _Names)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._names())


#: How an artefact runs (and is built): "auto" then every registered backend.
BACKENDS: Sequence[str] = _Names()

register(BackendEntry("onnxruntime", (".onnx",), "lix_deploy.runtime.backends.onnxruntime_backend:open_backend",
                      "lix_deploy.builders.onnxruntime_build", needs="an ONNX file"))
register(BackendEntry("tensorrt", (".engine", ".plan", ".trt"),
                      "lix_deploy.runtime.backends.tensorrt_backend:open_backend",
                      "lix_deploy.builders.tensorrt_build",
                      needs="an engine built with python -m lix_deploy.build_engine (or run the ONNX on onnxruntime "
                            "with providers=['tensorrt'])"))
