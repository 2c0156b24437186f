"""One config system for every entry point: validated dataclasses, YAML presets, dotted overrides.

A config is a tree of dataclasses. Each field carries its help text (`option(default, "help")`),
so `--help` documents every option from the same place the code reads it. Values are resolved in
this order, later wins: dataclass defaults -> preset YAML -> user YAML (`--config FILE`) ->
command-line overrides (`--train.lr 0.01`). Unknown keys are errors that list the valid ones,
and every dataclass validates itself in `__post_init__`, so a bad value fails before any work.
Every tool's parser is a lix_common.cli.OneLineParser: a bad argument is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names it."""


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with its help text (and allowed values) attached."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = "") -> Any:
    """A nested config section, built from its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "choices": None})


@dataclasses.dataclass(frozen=True)
class OptionSection:
    """A registered thing's own settings: the section `<parent>.<section>`, its config dataclass, its help."""

    section: str
    cls: type
    help: str = ""


def with_sections(registered: Callable[[], Sequence[OptionSection]], parent: str) -> Callable[[type], type]:
    """Class decorator: add each registered OptionSection as a section of the config class, after its own fields,
    in registration order (data.<dataset options>, distill.<method options>): a new dataset or method brings its
    settings with it instead of an edit of the config class."""

    def decorate(cls: type) -> type:
        for group in registered():
            if group.section in cls.__annotations__ or group.section in vars(cls):
                raise ValueError(f"option section {parent}.{group.section} would replace {cls.__name__}'s own option "
                                 "or attribute of that name")
            cls.__annotations__[group.section] = group.cls
            setattr(cls, group.section, section(group.cls, group.help))
        return cls

    return decorate


class LiveNames(Sequence):
    """The names `read()` gives (a registry's keys), as a tuple-like sequence read each time it is used: the choices
    of an option whose values are registered (distill.method, data.dataset), current for --help, argparse and
    validation alike."""

    def __init__(self, read: Callable[[], Iterable[str]]):
        self._read = read

    def _names(self) -> tuple[str, ...]:
        return tuple(self._read())

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(self._names())


def check_choice(name: str, value: Any, choices) -> None:
    """Raise ConfigError unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise ConfigError unless low <= value <= high (either bound may be None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{name}={value!r} must lie in {bounds}")


def check_positive(name: str, value: float) -> None:
    """Raise ConfigError unless value > 0 (a temperature, a ratio, a scale)."""
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be > 0")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _convert(name: str, value: Any, tp: Any) -> Any:
    """Coerce a YAML or command-line value to the field's declared type."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} may not be empty")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            raise ValueError("expected true or false")
        if tp in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"expected {tp.__name__}")
            converted = tp(value)
            if tp is int and isinstance(value, float) and value != converted:
                raise ValueError("expected a whole number")
            return converted
        if tp is str:
            return str(value)
        if tp is Path:
            return Path(value)
        if origin in (tuple, list):
            items = value.split(",") if isinstance(value, str) else list(value)
            args = typing.get_args(tp)
            item_type = args[0] if args else str
            converted = [_convert(f"{name}[{i}]", v, item_type) for i, v in enumerate(items) if v != ""]
            return tuple(converted) if origin is tuple else converted
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return dict(value)
        if typing.get_origin(tp) is typing.Literal:
            if value not in typing.get_args(tp):
                raise ValueError(f"expected one of {typing.get_args(tp)}")
            return value
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}={value!r}: {err}") from None
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build a config dataclass from a nested mapping; unknown keys raise ConfigError."""
    data = dict(data or {})
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        moved = getattr(cls, "__moved_options__", {}).get(unknown[0])
        if moved:  # a renamed option: say where it is now
            raise ConfigError(f"option {prefix}{unknown[0]} is now {moved} (one option group per method)")
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        raise ConfigError(f"unknown option {prefix}{unknown[0]!r}{where}; valid: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, (dict, tp)):
                raise ConfigError(f"{prefix}{key} is a section; give a mapping, not {value!r}")
            kwargs[key] = value if isinstance(value, tp) else from_dict(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _convert(prefix + key, value, tp)
            choices = fields[key].metadata.get("choices")
            if choices is not None and kwargs[key] is not None:
                check_choice(prefix + key, kwargs[key], choices)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(qualify(str(err), prefix)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def qualify(message: str, prefix: str) -> str:
    """A section's own message with its local names made full: `train.iters` -> `student.train.iters`.

    Sections validate themselves under their short name (TrainConfig says "train.warmup_iters"),
    but the same section sits under teacher and student: the message must say which one.
    """
    full = prefix.rstrip(".")
    local = full.rsplit(".", 1)[-1]
    if not full or full == local:
        return message
    return re.sub(rf"(?<![\w.]){re.escape(local)}\.", full + ".", message)


def to_dict(cfg: Any) -> dict:
    """Config dataclass -> plain nested dict (paths as strings, tuples as lists) for YAML/JSON."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins; neither input is modified."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data


def write_yaml(cfg: Any, path: str | Path) -> None:
    """Write a resolved config atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def _flatten_fields(cls: type, prefix: str = ""):
    """Yield (dotted name, type, field) for every leaf option of a config tree."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _flatten_fields(tp, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, tp, f


def _metavar(tp: Any) -> str:
    tp, _ = _unwrap_optional(tp)
    if typing.get_origin(tp) in (tuple, list):
        return "A,B,..."
    return {bool: "BOOL", int: "INT", float: "FLOAT"}.get(tp, "VALUE")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """Add one `--dotted.name VALUE` option per leaf field, grouped by section, help from the field.

    The help shows each option's value in `defaults` (a resolved config: the preset's; default
    cls()); show_defaults() re-labels them for another preset.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, tp, f in _flatten_fields(cls):
        section_name = name.rsplit(".", 1)[0] if "." in name else ""
        if section_name not in groups:
            title = f"{section_name} options" if section_name else "options"
            groups[section_name] = parser.add_argument_group(title)
            groups[section_name].config_section = section_name  # sectioned --help (cli.ExperimentParser)
        text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            text += f" One of: {', '.join(map(str, choices))}."
        action = groups[section_name].add_argument(f"--{name}", dest=f"cfg:{name}", default=None,
                                                   metavar=_metavar(tp))
        action.config_help = text  # the field's own text; show_defaults appends the default
    show_defaults(parser, cls() if defaults is None else defaults)


def show_defaults(parser: argparse.ArgumentParser, cfg: Any) -> None:
    """Set each config option's help to its text plus its value in `cfg` (once: the parser's formatter adds none)."""
    for action in parser._actions:
        if not hasattr(action, "config_help"):
            continue
        value: Any = cfg
        for part in action.dest[4:].split("."):
            value = getattr(value, part)
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        action.help = f"{action.config_help} (default: {shown})".replace("%", "%%")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The nested dict of options given on the command line (others stay unset)."""
    out: dict = {}
    for key, value in vars(args).items():
        if not key.startswith("cfg:") or value is None:
            continue
        node = out
        parts = key[4:].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


PRESET_BASE_KEY = "extends"


def read_preset(presets_dir: Path | None, preset: str, _seen: tuple[str, ...] = ()) -> dict:
    """A preset's options as a nested dict. `extends: NAME` at its top starts from preset NAME (whose own
    `extends` is followed too), so a variant of a protocol states only what it changes."""
    available = sorted(p.stem for p in presets_dir.glob("*.yaml")) if presets_dir else []
    if preset not in available:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(available) or 'none'}")
    path = presets_dir / f"{preset}.yaml"
    data = dict(read_yaml(path))
    base = data.pop(PRESET_BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or base in (*_seen, preset):
        raise ConfigError(f"{path}: {PRESET_BASE_KEY}: {base!r} must name another preset (and not loop back)")
    return merge(read_preset(presets_dir, base, (*_seen, preset)), data)


def resolve(
    cls: type[T],
    presets_dir: Path | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
) -> T:
    """Defaults -> preset -> config file -> overrides, validated into `cls`."""
    data: dict = {}
    if preset:
        data = read_preset(presets_dir, preset)
    if config_file:
        data = merge(data, read_yaml(config_file))
    if overrides:
        data = merge(data, overrides)
    return from_dict(cls, data)
