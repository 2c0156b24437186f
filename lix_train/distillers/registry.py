"""Distillation methods by name: a method is registered by the decorator on its own class.

    @register_distiller("kd", MethodOptions("kd", KDConfig, "Pixel-wise KD (method kd)."))
    class KD(Distiller): ...

A method with settings of its own declares their group in the decorator: DistillConfig gains the
section `distill.<group>` (lix_train/distillers/config.py builds it from `option_groups()` once every
method file is imported), so a new method is its file plus its import line in the package's table.

A leaf module (of the package it imports only the config's LiveNames), so both the config, which needs the names
for `distill.method`, and the method files can use it without an import cycle. The names are
the registration order of `lix_train/distillers/__init__.py`'s imports; `METHODS` is a live view
of them that imports the package on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Callable, TypeVar

from lix_train.config import LiveNames, OptionSection

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}
BASELINE = "baseline"  # the labels-only method (L_H alone): what every distiller is measured from
# The distill options that schedule and balance the terms: read by every method that has a term.
SCHEDULE_OPTIONS = ("warmup", "start", "decay", "balance", "balance_ratio")


MethodOptions = OptionSection  # a method's own settings: the section distill.<section> (lix_train.config)


_OPTIONS: dict[str, MethodOptions] = {}
_SEALED: list[bool] = [False]  # True once DistillConfig has read the groups: a later group would be lost


def register_distiller(name: str, options: MethodOptions | None = None) -> Callable[[T], T]:
    """Class decorator: make `cls` the method `name` (sets cls.method_name to it) and add its option group."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"distillation method {name!r} is already registered by {_REGISTRY[name].__name__}")
        if options is not None and _OPTIONS.get(options.section, options) != options:
            raise ValueError(f"distill.{options.section} is already the option group of another method")
        if options is not None and options.section not in _OPTIONS and _SEALED[0]:
            raise ValueError(f"method {name!r}: its option group distill.{options.section} comes after DistillConfig "
                             "was built; import its file in lix_train/distillers/__init__.py's table")
        cls.method_name = name
        _REGISTRY[name] = cls
        if options is not None:
            _OPTIONS[options.section] = options
        return cls

    return decorator


def option_groups() -> list[MethodOptions]:
    """Every registered method's option group, in registration order (DistillConfig's sections); seals the list."""
    _SEALED[0] = True
    return list(_OPTIONS.values())


def registered() -> dict[str, type]:
    """{name: Distiller class} of every method, in registration order (importing them all first)."""
    importlib.import_module("lix_train.distillers")
    return dict(_REGISTRY)


METHODS: Sequence[str] = LiveNames(registered)  # the registered names, read when used
