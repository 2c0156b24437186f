"""Plan the study's runs: resolve every spec's config, give each run its folder, and check that
the runs compare fairly before any training.

Each student run is exactly `python -m lix_train.distill --preset P --config OPTIONS --run-dir DIR`
(OPTIONS = the user's --config file, the study-wide overrides and the spec's overrides, written
to DIR/study_options.yaml so the command can be rerun by hand); a teacher-only run is
`python -m lix_train.train_teacher` with its options. The teacher's seed is the preset's for every run.

Two specs that resolve to the same config (an ablation's default variant and the main run of its
method) share one run, and a finished run of another study in the same OUT with the same config
serves a spec that is not finished yet. A run that needs test scores is not finished by a
val-only metrics.json (eval.score_test false); when its only twin is such a val-only run (a
tuning point), the twin's final checkpoint seeds its folder and the run only scores.

Every student run shares the main table's data, network, schedule and scoring, except for what
its spec says it varies (a budget's student.train.iters; a warm start's iterations and
init_from); a finished run must have been made with the config it is planned with. Configs are
compared on what a run depends on: of the distill section, only what its method reads.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from lix_train.cli import UserError
from lix_train.config import ConfigError, merge, read_yaml, resolve, to_dict
from lix_train.engine.checkpoint import LATEST as LATEST_CHECKPOINT
from lix_train.engine.trainer import CHECKPOINT_DIR
from lix_train.experiment import NOT_RESULT_AFFECTING, PRESETS_DIR, ExperimentConfig, load_stored_config, teacher_hash
from lix_train.report import METRICS_FILE
from lix_train.study.grid import RunSpec, nest
from lix_train.study.records import is_finished

RUNS_DIR = "runs"
OPTIONS_FILE = "study_options.yaml"
DISTILL = "lix_train.distill"
TRAIN_TEACHER = "lix_train.train_teacher"
# What may differ between the student runs of one study: the seed and the teacher's X.
STUDENT_VARIES = ("student.train.seed", "data.modality", "data.zero_x")


@dataclass
class StudySetup:
    """Where the runs start from and where they go."""

    preset: str
    out: Path
    config_file: Path | None = None
    overrides: dict = field(default_factory=dict)  # nested, applied to every run (from --section.key options)
    isolate: bool = False
    jobs: int = 1  # runs side by side (each its own process and log); 1 = one after another


@dataclass
class PlannedRun:
    """A spec with its resolved config, its folder and its teacher's folder in the shared store."""

    spec: RunSpec
    cfg: ExperimentConfig
    run_dir: Path
    teacher_dir: Path
    same_as: str | None = None  # another spec's (or study's) folder with an identical config serves this one
    # a finished run of this study's OUT with an identical config that cannot serve this one (val only, or this run
    # needs a folder of its own): its final checkpoint seeds this run's folder, so the run only scores (the same
    # weights: training is deterministic) instead of training again
    trained_in: str | None = None

    @property
    def done(self) -> bool:
        return is_finished(self.run_dir, self.spec.needs_test)

    @property
    def options_path(self) -> Path:
        return self.run_dir / OPTIONS_FILE

    def command(self, preset: str) -> str:
        """The shell command that runs (or continues) this run by hand."""
        if self.spec.teacher_only:
            return f"python -m {TRAIN_TEACHER} --preset {preset} --config {shlex.quote(str(self.options_path))}"
        return (f"python -m {DISTILL} --preset {preset} --config {shlex.quote(str(self.options_path))} "
                f"--run-dir {shlex.quote(str(self.run_dir))}")


def run_options(setup: StudySetup, spec: RunSpec) -> dict:
    """The options one run applies over the preset: --config file, then study-wide, then the spec's."""
    data = read_yaml(setup.config_file) if setup.config_file else {}
    return merge(merge(data, setup.overrides), nest(spec.overrides))


def resolve_spec(setup: StudySetup, spec: RunSpec) -> ExperimentConfig:
    try:
        return resolve(ExperimentConfig, PRESETS_DIR, setup.preset, None, run_options(setup, spec))
    except ConfigError as err:
        raise ConfigError(f"run {spec.name}: {err}") from None


def resolve_base(setup: StudySetup) -> ExperimentConfig:
    """The study's config before any spec: the preset, the --config file and the study-wide options."""
    return resolve_spec(setup, RunSpec("(study)", "", "", "", None))


# --- the plan ----------------------------------------------------------------------------------

def plan(specs: Sequence[RunSpec], setup: StudySetup) -> list[PlannedRun]:
    """Resolve every spec (config errors surface here, before any training) and give each its folder.

    Specs with identical configs share one run. Its folder is the first one that already holds a
    finished run (so adding an ablation that repeats a finished variant trains nothing), else a
    finished folder of another study in OUT with that config, else the first spec's.
    """
    resolved = []
    for spec in specs:
        cfg = resolve_spec(setup, spec)
        if spec.needs_test and not cfg.eval.score_test:
            # A study run with --eval.score_test false (or a config saying so) is val only: its
            # val-only metrics.json finishes it, or every rerun would train it again.
            spec = replace(spec, needs_test=False)
        teacher_dir = cfg.output.teachers_dir / teacher_hash(cfg)
        resolved.append((spec, cfg, teacher_dir, _identity(cfg, spec.teacher_only, teacher_dir)))
    finished = {spec.name for spec, *_ in resolved if is_finished(setup.out / RUNS_DIR / spec.name, spec.needs_test)}
    primary_of: dict[str, str] = {}
    for spec, _, _, key in resolved:
        if key not in primary_of or (spec.name in finished and primary_of[key] not in finished):
            primary_of[key] = spec.name
    trained_in = _reuse_other_folders(resolved, primary_of, finished, setup)
    planned = []
    for spec, cfg, teacher_dir, key in resolved:
        same_as = None if primary_of[key] == spec.name else primary_of[key]
        planned.append(PlannedRun(spec, cfg, setup.out / RUNS_DIR / (same_as or spec.name), teacher_dir, same_as,
                                  None if same_as else trained_in.get(spec.name)))
    check_same_protocol([p for p in planned if not p.spec.teacher_only])
    check_dependencies(planned)
    return planned


def _identity(cfg: ExperimentConfig, teacher_only: bool, teacher_dir: Path) -> str:
    if teacher_only:
        return f"teacher:{teacher_dir}"
    return json.dumps(compared_config(to_dict(cfg)), sort_keys=True, default=str)


def _reuse_other_folders(resolved: list, primary_of: dict[str, str], finished: set[str],
                         setup: StudySetup) -> dict[str, str]:
    """Serve an unfinished config from a finished run of another study in the same OUT with the same config.

    E.g. a val-only study at 3 seeds reuses the seed-0 runs of `--tune` whose point it repeats:
    the same config and seed train the same network, so training it again would only cost hours.
    A run that another run starts from (a warm start's baseline) keeps its own folder, since
    those read its student.pt by name. Updates `primary_of` in place. A twin that cannot serve
    (a val-only tuning point for a run that needs test, or any twin of a run that keeps its own
    folder) was still trained with the same weights: returns {run name: that twin's folder},
    whose final checkpoint seeds the run's own folder (`seed_trained_runs`).
    """
    starts_from = {name for spec, *_ in resolved for name in spec.after}
    wanted = {key: (spec, cfg) for spec, cfg, _, key in resolved if not spec.teacher_only
              and primary_of[key] not in finished and primary_of[key] == spec.name}
    if not wanted:
        return {}
    taken = {spec.name for spec, *_ in resolved}
    others = _finished_elsewhere(setup.out / RUNS_DIR, taken)
    trained_in: dict[str, str] = {}
    for key, (spec, cfg) in wanted.items():
        new = compared_config(_as_stored(cfg))
        twins = [name for name, stored in others if not config_differences(stored, new)]
        serving = [name for name in twins if is_finished(setup.out / RUNS_DIR / name, spec.needs_test)]
        if serving and spec.name not in starts_from:
            primary_of[key] = serving[0]
        else:
            runs = setup.out / RUNS_DIR
            with_weights = [name for name in twins if (runs / name / CHECKPOINT_DIR / LATEST_CHECKPOINT).is_file()]
            if with_weights:
                trained_in[spec.name] = with_weights[0]
    return trained_in


def seed_trained_runs(planned: Sequence[PlannedRun], runs: Path) -> list[PlannedRun]:
    """Copy each pending run's twin's final checkpoint (and its curves) into the run's own empty folder, where
    distill continues it: nothing left to train, it writes student.pt and scores test and val. Returns them."""
    seeded = []
    for run in planned:
        target = run.run_dir / CHECKPOINT_DIR / LATEST_CHECKPOINT
        if run.trained_in is None or run.same_as or run.done or target.exists():
            continue
        source = runs / run.trained_in
        target.parent.mkdir(parents=True, exist_ok=True)
        for name in (f"{CHECKPOINT_DIR}/{LATEST_CHECKPOINT}", "train.csv", "eval.csv"):
            if (source / name).is_file():
                tmp = run.run_dir / f"{name}.seeding"
                shutil.copyfile(source / name, tmp)
                os.replace(tmp, run.run_dir / name)  # atomic: a half-copied checkpoint is never resumed
        seeded.append(run)
    return seeded


def _finished_elsewhere(runs: Path, taken: set[str]) -> list[tuple[str, dict]]:
    """(folder name, compared config) of each finished student run under `runs` that no spec of the plan names."""
    out = []
    folders = sorted(runs.iterdir()) if runs.is_dir() else []
    for folder in folders:
        stored_path = folder / "config.yaml"
        if folder.name in taken or not (folder / METRICS_FILE).is_file() or not stored_path.is_file():
            continue
        try:
            stored = load_stored_config(stored_path)
        except (OSError, yaml.YAMLError):
            continue  # an unreadable folder serves nothing; its own study reports it
        if isinstance(stored, dict) and "student" in stored:
            out.append((folder.name, compared_config(stored)))
    return out


# --- checks ------------------------------------------------------------------------------------

def check_same_protocol(planned: Sequence[PlannedRun]) -> None:
    """Every student run must see the same data, network, schedule and scoring; else the comparison is unfair.

    Each run is compared with the first main-table run (one that varies nothing), and may differ
    from it only in the seed, the teacher's X and what its own spec varies.
    """
    if not planned:
        return
    first = next((p for p in planned if not p.spec.varies), planned[0])

    def protocol(p: PlannedRun) -> dict:
        d = to_dict(p.cfg)
        return {k: d[k] for k in ("data", "student", "eval")}

    for other in planned:
        allowed = STUDENT_VARIES + tuple(first.spec.varies) + tuple(other.spec.varies)
        diffs = [k for k in config_differences(protocol(first), protocol(other)) if not k.startswith(allowed)]
        if diffs:
            raise UserError(f"runs {first.spec.name} and {other.spec.name} differ in {', '.join(diffs[:4])}: "
                            "every student run of a study must share its data, network, schedule and scoring")


def check_dependencies(planned: Sequence[PlannedRun]) -> None:
    """A run's `after` names must be student runs of the plan with folders of their own (its init_from)."""
    own = {p.spec.name for p in planned if not p.spec.teacher_only and p.same_as is None}
    for p in planned:
        missing = [name for name in p.spec.after if name not in own]
        if missing:
            raise UserError(f"run {p.spec.name} starts from {missing[0]}, which is not a run of this study")


def check_start_weights(planned: Sequence[PlannedRun]) -> None:
    """A pending warm start whose source run is finished needs that run's weights (its init_from) before training
    starts, not hours later: a study restored from an archive saved without --keep-weights has the source's scores
    but no student.pt. (Not checked by plan(): --report-only and --dry-run read the scores only.)"""
    by_name = {p.spec.name: p for p in planned}
    for p in planned:
        init = p.cfg.student.train.init_from
        if p.done or init is None:
            continue
        for name in p.spec.after:
            source = by_name[name]
            if source.done and not Path(init).is_file():
                raise UserError(
                    f"run {p.spec.name} starts from {init}, which is missing although run {name} is finished (its "
                    f"scores without its weights, as `python -m lix_train.study.archive restore` leaves a run saved "
                    f"without --keep-weights {name}): restore an archive that kept them, or delete "
                    f"{source.run_dir / METRICS_FILE} to train {name} again (training is deterministic: the same "
                    "weights and scores)")


def check_finished_run(run: PlannedRun) -> None:
    """A finished run must have been made with this config (a changed protocol must not mix with old runs)."""
    stored = run.run_dir / "config.yaml"
    try:
        old = load_stored_config(stored)  # runs made before an option moved read as now
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{stored}: cannot read the finished run's config ({err}); delete {run.run_dir} to redo it")
    new = _as_stored(run.cfg)
    only = run.spec.teacher_only
    diffs = config_differences(compared_config(old, only), compared_config(new, only))
    if diffs:
        shown = ", ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")
        tuned = [k for k in diffs if k in run.spec.tuned]
        hint = "" if not tuned else (
            f" ({', '.join(tuned)} come from the tuned settings of {run.spec.method} in lix_train/study/tuned.yaml: "
            "--untuned reuses the runs made with the preset's defaults)")
        raise UserError(f"{run.run_dir} holds a finished run with a different config ({shown}){hint}; choose "
                        "another --out for the new protocol, or delete that folder")


def _as_stored(cfg: ExperimentConfig) -> dict:
    """`cfg` as its config.yaml reads back (tuples as lists), to compare with a stored one."""
    return yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


# --- config comparison -------------------------------------------------------------------------

def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: leaf value}."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def config_differences(a: dict, b: dict, ignore: Sequence[str] = NOT_RESULT_AFFECTING) -> list[str]:
    """Dotted keys whose values differ between two config dicts, leaving out keys under `ignore` prefixes."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and not k.startswith(tuple(ignore)))


def compared_config(config: dict, teacher_only: bool = False) -> dict:
    """A run's config as the study compares it: of the distill section, only what its method reads.

    A KD run does not depend on ARFD's bandwidth, so changing a LIX default must not make the
    finished KD runs look stale (Distiller.options_read says what each method reads). A
    teacher-only run depends on neither the student nor the distillation.
    """
    from lix_train.distillers import DISTILLERS

    if teacher_only:
        return {k: v for k, v in config.items() if k not in ("student", "distill")}
    distill = config.get("distill")
    if not isinstance(distill, dict) or distill.get("method") not in DISTILLERS:
        return config
    read = DISTILLERS[distill["method"]].options_read()
    return {**config, "distill": {k: v for k, v in distill.items() if k in read}}
