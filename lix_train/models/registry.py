"""Models by name: `create_model("student", encoder="resnet18", num_classes=14, width=0.25)`.

Every entry is a model class, whose constructor is the option list, plus fixed options
("student_mobilenetv2" is RGBStudent with encoder="mobilenetv2"). Unknown names and unknown options fail with the valid choices listed,
so a typo in a config file never silently builds a different network.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .encoders import ENCODERS
from .student import RGBStudent
from .teacher import DuplexTeacher


@dataclass(frozen=True)
class ModelEntry:
    """A registered model class and the options the name fixes.

    The class's own constructor is the option list (one `Args:` docstring, no builder repeating
    it), plus `pretrained`: a local weights file that the class's `load_pretrained` applies.
    """

    name: str
    cls: type[nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)

    def options(self) -> list[str]:
        """Keyword options `create_model` accepts for this name."""
        params = list(inspect.signature(self.cls.__init__).parameters)[1:]  # without self
        return [p for p in params if p not in self.fixed] + [PRETRAINED]


PRETRAINED = "pretrained"
_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, **fixed: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Decorator: register a model class under `name`, with `fixed` options the caller may not override."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        if not callable(getattr(cls, "load_pretrained", None)):
            raise TypeError(f"model {name!r}: {cls.__name__} has no load_pretrained(path) method")
        _MODELS[name] = ModelEntry(name, cls, dict(fixed))
        return cls

    return decorator


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """The options `create_model(name, ...)` accepts."""
    return _entry(name).options()


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build a registered model; `pretrained` (a local .pth/.pt file) initialises its encoder(s).

    Unknown names raise ValueError and unknown options TypeError, both listing the valid choices.
    """
    entry = _entry(name)
    valid = entry.options()
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise TypeError(
            f"create_model({name!r}): unknown option {unknown[0]!r}; valid options: {', '.join(valid)}"
        )
    pretrained: str | Path | None = cfg.pop(PRETRAINED, None)
    model = entry.cls(**entry.fixed, **cfg)
    if pretrained is not None:
        model.load_pretrained(pretrained)
    return model


register_model("student")(RGBStudent)
register_model("teacher")(DuplexTeacher)
for _encoder in ENCODERS:
    register_model(f"student_{_encoder}", encoder=_encoder)(RGBStudent)
    register_model(f"teacher_{_encoder}", encoder=_encoder)(DuplexTeacher)
