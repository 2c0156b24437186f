"""Distillation methods by name: a method is registered by the decorator on its own class.

    @register_distiller("kd")
    class KD(Distiller): ...

A leaf module (it imports nothing of the package), so both the config, which needs the names
for `distill.method`, and the method files can use it without an import cycle. The names are
the registration order of `lix_train/distillers/__init__.py`'s imports; `METHODS` is a live view
of them that imports the package on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Callable, TypeVar

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}
BASELINE = "baseline"  # the labels-only method (L_H alone): what every distiller is measured from


def register_distiller(name: str) -> Callable[[T], T]:
    """Class decorator: make `cls` the method `name` (sets cls.method_name to it)."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"distillation method {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.method_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered() -> dict[str, type]:
    """{name: Distiller class} of every method, in registration order (importing them all first)."""
    importlib.import_module("lix_train.distillers")
    return dict(_REGISTRY)


class _MethodNames(Sequence):
    """The registered method names as a tuple-like sequence, resolved when first read."""

    def _names(self) -> tuple[str, ...]:
        return tuple(registered())

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(self._names())


METHODS: Sequence[str] = _MethodNames()
