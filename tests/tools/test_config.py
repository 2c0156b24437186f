"""The shared config system: precedence, type conversion, validation and --help."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from lix_train.config import (
    ConfigError, add_config_arguments, check_range, from_dict, option, overrides_from_args,
    resolve, section, to_dict, write_yaml, read_yaml,
)


@dataclass
class Optim:
    lr: float = option(0.01, "Peak learning rate.")
    name: str = option("sgd", "Optimiser.", choices=("sgd", "adamw"))
    betas: tuple[float, ...] = option((0.9, 0.999), "AdamW betas.")

    def __post_init__(self):
        check_range("optim.lr", self.lr, low=0.0)


@dataclass
class Run:
    iters: int = option(100, "Training iterations.")
    amp: bool = option(False, "Mixed precision on CUDA.")
    out: Path | None = option(None, "Run directory.")
    optim: Optim = section(Optim, "Optimiser settings.")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Run)
    return overrides_from_args(parser.parse_args(argv))


def test_defaults_and_round_trip(tmp_path):
    cfg = from_dict(Run, {})
    assert cfg.iters == 100 and cfg.optim.name == "sgd"
    write_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(Run, read_yaml(tmp_path / "c.yaml")) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


def test_precedence_preset_then_file_then_cli(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "quick.yaml").write_text("iters: 5\noptim: {lr: 0.5, name: adamw}\n")
    user = tmp_path / "user.yaml"
    user.write_text("optim: {lr: 0.25}\n")
    cfg = resolve(Run, presets, "quick", user, _parse(["--iters", "7", "--amp", "true"]))
    assert (cfg.iters, cfg.amp, cfg.optim.lr, cfg.optim.name) == (7, True, 0.25, "adamw")


def test_cli_values_are_converted():
    cfg = from_dict(Run, _parse(["--optim.betas", "0.5,0.6", "--out", "runs/x"]))
    assert cfg.optim.betas == (0.5, 0.6) and cfg.out == Path("runs/x")
    assert from_dict(Run, {"out": "none"}).out is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"itres": 3}, "unknown option 'itres'"),
        ({"optim": {"lrr": 1}}, "unknown option optim.'lrr'"),
        ({"optim": {"name": "rmsprop"}}, "optim.name='rmsprop' is not one of"),
        ({"optim": {"lr": -1}}, "optim.lr=-1.0 must lie in"),
        ({"iters": "many"}, "iters='many'"),
        ({"iters": 2.5}, "whole number"),
        ({"amp": "maybe"}, "expected true or false"),
        ({"optim": 3}, "optim is a section"),
    ],
)
def test_bad_values_name_the_option(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        from_dict(Run, data)


def test_unknown_preset_lists_available(tmp_path):
    (tmp_path / "quick.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match="unknown preset 'fast'; available: quick"):
        resolve(Run, tmp_path, "fast")


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iters: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_help_lists_every_option_with_default():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Run)
    text = parser.format_help()
    for flag in ("--iters", "--amp", "--out", "--optim.lr", "--optim.name", "--optim.betas"):
        assert flag in text
    assert "Peak learning rate. (default: 0.01)" in text
    assert "One of: sgd, adamw" in text


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_nested_section_errors_name_the_full_dotted_path(role):
    """TrainConfig checks itself as `train.*`; under teacher / student the message must say which."""
    from lix_train.config import ConfigError, from_dict
    from lix_train.experiment import ExperimentConfig

    with pytest.raises(ConfigError, match=rf"^{role}\.train\.warmup_iters=30 must lie in \[0, 5\]$"):
        from_dict(ExperimentConfig, {role: {"train": {"iters": 5, "warmup_iters": 30}}})
    with pytest.raises(ConfigError, match=rf"{role}\.train\.eval\.stride=.* must not exceed {role}\.train\.eval\.crop"):
        from_dict(ExperimentConfig, {role: {"train": {"eval": {"stride": [512, 512]}}}})
