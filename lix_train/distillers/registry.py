"""Distillation methods by name: a method is registered by the decorator on its own class.

    @register_distiller("kd")
    class KD(Distiller): ...

A leaf module (of the package it imports only the config's LiveNames), so both the config, which needs the names
for `distill.method`, and the method files can use it without an import cycle. The names are
the registration order of `lix_train/distillers/__init__.py`'s imports; `METHODS` is a live view
of them that imports the package on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Callable, TypeVar

from lix_train.config import LiveNames

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


METHODS: Sequence[str] = LiveNames(registered)  # the registered names, read when used
