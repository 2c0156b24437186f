"""What the three entry points (train_teacher, distill, evaluate) share: one argument style,
one config resolution, one way to report user errors, one run-folder policy.

Style: `--preset NAME`, `--config FILE`, `--run-dir DIR`, `--resume [PATH]`, `--print-config`,
then every config option as `--section.key VALUE` (generated from the config dataclasses, so
`--help` documents each one). User errors (a bad option, a missing file, a checkpoint of
another network, a dataset without X for a teacher, a NaN loss) end with one line on stderr
and exit status 2, never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml

from lix_common.cli import EXIT_BAD_INPUT, HelpFormatter, OneLineParser, one_line
from lix_train.config import (
    ConfigError, add_config_arguments, from_dict, merge,
    overrides_from_args, read_yaml, resolve, show_defaults, to_dict, write_yaml,
)
from lix_train.data.errors import DatasetError, worker_error_message
from lix_train.engine.checkpoint import CheckpointError, signature_differences
from lix_train.engine.device import select_device
from lix_train.engine.distributed import all_gather_objects, cleanup, get_info, init_distributed, process_device
from lix_train.engine.trainer import CHECKPOINT_DIR, NonFiniteLossError
from lix_train.experiment import DEFAULT_PRESET, NOT_RESULT_AFFECTING, PRESETS_DIR, ExperimentConfig, load_stored_config

CONFIG_FILE = "config.yaml"


class UserError(Exception):
    """A problem with what the user asked for; the message says what and how to fix it."""


# The config options a first run is most likely to set: `--help` lists these; --help-all lists all.
COMMON_OPTIONS = ("data.dataset", "data.root", "data.modality", "data.transforms.size", "teacher.train.iters",
                  "student.train.iters", "student.train.seed", "student.train.device", "student.model.width",
                  "distill.method", "eval.mode", "output.teachers_dir")
HELP_FLAGS = ("-h", "--help", "--help-all", "--help-section")


class _HelpAction(argparse.Action):
    """--help-all / --help-section NAME: print that view of the help and exit."""

    def __init__(self, option_strings, dest, mode: str, **kwargs):
        self.mode = mode
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.help_view = (self.mode, values) if self.mode == "section" else self.mode
        parser.print_help()
        parser.exit()


class ExperimentParser(OneLineParser):
    """Sectioned help with the defaults of the preset asked for (`--preset NAME --help`).

    Several hundred config options do not belong on one screen: `--help` shows the tool's own
    flags, the common options and an index of the sections; `--help-section NAME` one section
    (a prefix such as `distill` includes its subsections); `--help-all` everything.
    """

    help_view: str | tuple[str, str] = "short"

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        if any(a in HELP_FLAGS or a.startswith("--help-section=") for a in argv):
            self._show_preset_defaults(argv)
        return super().parse_args(argv, namespace)

    def add_help_views(self) -> None:
        self.add_argument("--help-all", nargs=0, action=_HelpAction, mode="all",
                          help="Show every config option, section by section, and exit.")
        self.add_argument("--help-section", metavar="NAME", action=_HelpAction, mode="section",
                          help="Show the options of one config section (e.g. data, distill.arfd) and exit.")

    def format_help(self) -> str:
        if self.help_view == "all":
            return super().format_help()
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        sections = [g for g in self._action_groups if getattr(g, "config_section", None) is not None]
        for group in self._action_groups:
            if group not in sections:
                self._add_group(formatter, group.title, group._group_actions)
        if isinstance(self.help_view, tuple):
            name = self.help_view[1]
            chosen = [g for g in sections if g.config_section == name or g.config_section.startswith(name + ".")]
            if not chosen:
                self.error(f"--help-section {name!r}: no such section; sections: "
                           f"{', '.join(g.config_section for g in sections)}")
            for group in chosen:
                self._add_group(formatter, group.title, group._group_actions)
        else:
            common = [a for name in COMMON_OPTIONS for a in self._actions if a.dest == f"cfg:{name}"]
            self._add_group(formatter, "common config options (every one: --help-all)", common)
            index = "; ".join(f"{g.config_section} ({len(g._group_actions)})" for g in sections)
            formatter.add_text(f"Config sections and their option counts, each shown by --help-section NAME: {index}.")
        formatter.add_text(self.epilog)
        return formatter.format_help()

    @staticmethod
    def _add_group(formatter, title: str, actions) -> None:
        formatter.start_section(title)
        formatter.add_arguments(actions)
        formatter.end_section()

    def _show_preset_defaults(self, argv: list[str]) -> None:
        preset = self.get_default("preset") or DEFAULT_PRESET
        for i, arg in enumerate(argv):
            if arg == "--preset" and i + 1 < len(argv):
                preset = argv[i + 1]
            elif arg.startswith("--preset="):
                preset = arg.split("=", 1)[1]
        try:
            show_defaults(self, resolve(ExperimentConfig, PRESETS_DIR, preset, None, {}))
        except ConfigError:  # an unknown preset: the run itself reports it; help keeps the default preset's
            return
        self.epilog = self.defaults_note(preset)

    def defaults_note(self, preset: str) -> str:
        stored = ""
        if self.get_default("preset") is None:  # evaluate: the checkpoint's config unless --preset is given
            stored = "; without --preset the checkpoint's stored config applies"
        return f"Option defaults shown are those of preset {preset!r} (choose another with --preset NAME){stored}."


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def experiment_parser(prog: str, description: str, *, run_dir_help: str, resume: bool = True,
                      default_preset: str | None = DEFAULT_PRESET, usage_extra: str = "") -> OneLineParser:
    """The shared parser: preset / config / run dir / resume / print-config, then every config option.

    `usage_extra` lists the tool's own flags in the one-line usage (the config options, a few
    hundred, are summarised as --SECTION.KEY VALUE there and listed by section in --help).
    """
    usage = (f"%(prog)s [-h] [--preset NAME] [--config FILE] [--run-dir DIR]{' [--resume [PATH]]' if resume else ''} "
             f"[--print-config] {usage_extra + ' ' if usage_extra else ''}[--SECTION.KEY VALUE ...]")
    parser = ExperimentParser(prog=prog, description=description, usage=usage, formatter_class=HelpFormatter)
    fallback = "" if default_preset else f"; none = the config stored in the checkpoint, else {DEFAULT_PRESET}"
    parser.add_argument("--preset", default=default_preset, metavar="NAME",
                        help=f"Named config to start from: {', '.join(available_presets())} "
                             f"(lix_train/presets/NAME.yaml){fallback}.")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML file of options applied over the preset (same layout as a run's config.yaml).")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR", help=run_dir_help)
    if resume:
        parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                            help="Continue an interrupted run: with no PATH the run in --run-dir (its "
                                 "checkpoints/latest.pt), with PATH that checkpoint. Also allows continuing "
                                 "with a changed config (e.g. more iterations).")
    parser.add_argument("--print-config", action="store_true",
                        help="Print the resolved config as YAML and exit.")
    parser.add_help_views()
    add_config_arguments(parser, ExperimentConfig,
                         resolve(ExperimentConfig, PRESETS_DIR, default_preset or DEFAULT_PRESET, None, {}))
    parser.epilog = parser.defaults_note(default_preset or DEFAULT_PRESET)
    return parser


def resolve_experiment(args: argparse.Namespace, base: dict | None = None) -> ExperimentConfig:
    """Defaults -> preset (or `base`) -> --config file -> --section.key overrides."""
    overrides = overrides_from_args(args)
    if base is not None and args.preset is None:
        data = dict(base)
        if args.config:
            data = merge(data, read_yaml(args.config))
        return from_dict(ExperimentConfig, merge(data, overrides))
    return resolve(ExperimentConfig, PRESETS_DIR, args.preset or DEFAULT_PRESET, args.config, overrides)


def config_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def setup_logging(is_main: bool) -> None:
    """INFO messages of the library on rank 0 (to stderr), warnings only on the other ranks."""
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, format="%(message)s",
                        stream=sys.stderr, force=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix (reported in one line, exit 2)."""
    return (UserError, ConfigError, DatasetError, CheckpointError, NonFiniteLossError)



def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None,
            body: Callable[[argparse.Namespace], int]) -> int:
    """Parse, run `body`, and turn user errors into one line on stderr + exit status 2."""
    args = parser.parse_args(argv)
    errors = user_errors()
    finished = False
    try:
        code = body(args)
        finished = True
        return code
    except Exception as err:  # noqa: BLE001 - only user errors are reported here; the rest re-raise
        # A user error raised in a DataLoader worker arrives re-wrapped, its message the worker's traceback.
        message = worker_error_message(err, [t.__name__ for t in errors])
        if message is None and not isinstance(err, errors):
            raise
        info = get_info()
        where = f" [rank {info.rank}]" if info.world_size > 1 else ""
        print(f"{parser.prog}: error{where}: {message or one_line(err)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    finally:
        cleanup(finished)


def shared(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank (the value itself in one process)."""
    return all_gather_objects(obj)[0]


def default_run_dir(cfg: ExperimentConfig, preset: str | None) -> Path:
    name = cfg.output.name or f"{preset or 'custom'}-{datetime.now():%Y%m%d-%H%M%S}"
    return cfg.output.runs_dir / name


def choose_run_dir(args: argparse.Namespace, cfg: ExperimentConfig) -> Path:
    """--run-dir; else the run a `--resume PATH` checkpoint belongs to; else a new folder under runs_dir."""
    if args.run_dir is not None:
        return args.run_dir
    if isinstance(args.resume, str):
        return run_dir_of_checkpoint(Path(args.resume))
    if args.resume:
        raise UserError("--resume without a PATH continues the run in --run-dir DIR; give one of them")
    return default_run_dir(cfg, args.preset)


def _config_differences(path: Path, cfg: ExperimentConfig) -> list[str]:
    """Dotted option names whose values differ between the YAML at `path` and `cfg` (empty = same)."""
    try:
        stored = load_stored_config(path)  # a run made before an option moved reads as now
    except (OSError, yaml.YAMLError) as err:
        return [f"(unreadable {path.name}: {err})"]
    current = yaml.safe_load(config_yaml(cfg))
    keys = [d.split(":")[0] for d in signature_differences(stored, current)]
    # An option added after the run was made is absent from its config.yaml; at its unset value
    # (None, e.g. train.init_from) it is what the run did, not a difference.
    keys = [k for k in keys if not (_lookup(stored, k) is _ABSENT and _lookup(current, k) is None)]
    return [k for k in keys if not k.startswith(NOT_RESULT_AFFECTING)]  # e.g. progress bars on or off


_ABSENT = object()


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


RESULT_FILES = ("student.pt", "teacher.pt", "metrics.json")


def holds_results(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything trained: a checkpoint or a finished run's weights / metrics."""
    if any((run_dir / name).is_file() for name in RESULT_FILES):
        return True
    checkpoints = run_dir / CHECKPOINT_DIR
    return checkpoints.is_dir() and any(checkpoints.glob("*.pt"))


def prepare_run_dir(run_dir: Path, cfg: ExperimentConfig, resume: Any, is_main: bool) -> Path | None:
    """Check `run_dir` against the request and write its config.yaml; returns the explicit resume checkpoint.

    A folder that already holds a run with a *different* config is refused unless --resume is
    given (so a typo never overwrites a finished run); the same config simply continues (a
    finished run is re-evaluated). A folder with a config.yaml but nothing trained (a run that
    failed before its first checkpoint) takes the new config: there is nothing to protect.
    `--resume` without a checkpoint to resume is an error.
    """
    explicit: Path | None = None
    latest = run_dir / CHECKPOINT_DIR / "latest.pt"
    if isinstance(resume, (str, Path)):
        explicit = Path(resume)
        if not explicit.is_file():
            raise UserError(f"--resume {explicit}: checkpoint file not found")
    elif resume is True and not latest.is_file():
        raise UserError(f"--resume: no checkpoint to continue in {run_dir} (expected {latest})")
    stored = run_dir / CONFIG_FILE
    if stored.is_file() and not resume and holds_results(run_dir):
        differs = _config_differences(stored, cfg)
        if differs:
            shown = ", ".join(differs[:4]) + (" ..." if len(differs) > 4 else "")
            raise UserError(f"{run_dir} already holds a run with a different config ({shown}); pass --resume to "
                            "continue it with the new config, or choose another --run-dir")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(cfg, stored)
    return explicit


def run_dir_of_checkpoint(path: Path) -> Path:
    """The run folder a checkpoint belongs to (RUN/checkpoints/latest.pt or RUN/student.pt -> RUN)."""
    parent = path.parent
    return parent.parent if parent.name == CHECKPOINT_DIR else parent


def init_runtime(cfg: ExperimentConfig, preference: str):
    """(DistInfo, torch.device) of this process: joins the torchrun group if launched by torchrun."""
    import torch

    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)

    try:
        device = select_device(preference)
    except RuntimeError as err:
        raise UserError(str(err)) from None
    info = init_distributed(device)
    setup_logging(info.is_main)
    return info, process_device(device, info)
