"""Plan the study's runs and run them through the project's own entry points.

Each student run is exactly `python -m lix_train.distill --preset P --config OPTIONS --run-dir DIR`
(OPTIONS = the user's --config file, the study-wide overrides and the spec's overrides, written
to DIR/study_options.yaml so the command can be rerun by hand). Teachers come first, through
`python -m lix_train.train_teacher` into the shared store: one per teacher config, trained once
(or reused) and scored on the test split, so the student runs only ever reuse them and the ETA
counts student runs alone. The teacher's seed is the preset's for every run.

Resumable: a run whose folder holds metrics.json is finished and skipped; any other run is
started again in its folder, where the trainer continues from checkpoints/latest.pt. A run that
needs test scores is not finished by a val-only metrics.json (eval.score_test false): started
again, it only scores test. Two specs that resolve to the same config (an ablation's default
variant and the main run of its method) share one run.

Every student run shares the main table's data, network, schedule and scoring, except for what
its spec says it varies (a budget's student.train.iters; a warm start's iterations and
init_from). A run with `after` (a warm start) starts only once those runs have finished: one
after another they come last, with --jobs N in a second phase.

In-process by default (no interpreter or torch start-up per run; memory is released between
runs); `isolate=True` starts a fresh Python per run, which bounds memory whatever a run leaks.
`jobs=N` runs N of them side by side, each in its own process with its log in its folder
(parallel.py): teachers first, then the student runs.
"""

from __future__ import annotations

import gc
import importlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from lix_train.cli import UserError
from lix_train.config import ConfigError, merge, read_yaml, resolve, to_dict, write_yaml
from lix_train.evaluate import eval_file_name
from lix_train.experiment import NOT_RESULT_AFFECTING, PRESETS_DIR, ExperimentConfig, load_stored_config, teacher_hash
from lix_train.report import METRICS_FILE, write_json, write_text
from lix_train.study.grid import RunSpec, nest
from lix_train.study.parallel import Job, run_jobs

RUNS_DIR = "runs"
OPTIONS_FILE = "study_options.yaml"
TEACHER_FILE = "teacher.pt"
DISTILL = "lix_train.distill"
TRAIN_TEACHER = "lix_train.train_teacher"
LOG_FILE = "train.log"
# Progress bars would flood the per-run logs of parallel runs (bookkeeping only: not compared).
QUIET = ["--teacher.train.progress", "false", "--student.train.progress", "false"]
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


def resolve_base(setup: StudySetup) -> ExperimentConfig:
    """The study's config before any spec: the preset, the --config file and the study-wide options."""
    return resolve_spec(setup, RunSpec("(study)", "", "", "", None))


def _identity(cfg: ExperimentConfig, teacher_only: bool, teacher_dir: Path) -> str:
    if teacher_only:
        return f"teacher:{teacher_dir}"
    return json.dumps(compared_config(to_dict(cfg)), sort_keys=True, default=str)


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
    _reuse_other_folders(resolved, primary_of, finished, setup)
    planned = []
    for spec, cfg, teacher_dir, key in resolved:
        same_as = None if primary_of[key] == spec.name else primary_of[key]
        planned.append(PlannedRun(spec, cfg, setup.out / RUNS_DIR / (same_as or spec.name), teacher_dir, same_as))
    check_same_protocol([p for p in planned if not p.spec.teacher_only])
    check_dependencies(planned)
    return planned


def is_finished(run_dir: Path, needs_test: bool = False) -> bool:
    """A run folder holds a finished run once distill (or the teacher record) wrote its metrics.

    With `needs_test`, a val-only run's metrics (eval.score_test false: "split" "val") do not count.
    """
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return False
    if not needs_test:
        return True
    try:
        return json.loads(path.read_text()).get("split") != "val"
    except (OSError, ValueError, AttributeError):
        return False


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


def _as_stored(cfg: ExperimentConfig) -> dict:
    """`cfg` as its config.yaml reads back (tuples as lists), to compare with a stored one."""
    return yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


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


def teacher_complete(teacher_dir: Path) -> bool:
    return (teacher_dir / TEACHER_FILE).is_file()


def call_entry_point(module: str, argv: list[str], isolate: bool) -> int:
    """`python -m module argv...`: in this process (its main()) or, isolated, in a fresh interpreter."""
    if isolate:
        return subprocess.run([sys.executable, "-m", module, *argv], check=False).returncode
    try:
        return importlib.import_module(module).main(argv)
    finally:
        gc.collect()  # drop the finished run's networks and loaders before the next one


def write_options(run: PlannedRun, setup: StudySetup) -> Path:
    """The run's options as YAML (the --config of its command), written atomically."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(run_options(setup, run.spec), default=str))  # tuples -> lists, paths -> str
    text = yaml.safe_dump(plain, sort_keys=False)
    return write_text(run.options_path, text)


@dataclass
class Progress:
    """'run i of n' with an ETA from the student runs finished in this call."""

    durations: list[float] = field(default_factory=list)

    def eta(self, remaining: int) -> str:
        if not self.durations:
            return "ETA after the first run"
        each = sum(self.durations) / len(self.durations)
        return f"{duration(each)} per run, ETA {duration(each * remaining)}"


def duration(seconds: float) -> str:
    """12 s, 4.5 min, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, rest = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {rest:02d} min"


def ensure_teachers(pending: Sequence[PlannedRun], setup: StudySetup, say: Callable[[str], None]) -> None:
    """Train every missing teacher of the pending runs once, and score (and record) the teacher-only runs."""
    needed: dict[Path, PlannedRun] = {}
    for run in pending:
        if run.spec.teacher_only or run.teacher_dir not in needed:
            needed[run.teacher_dir] = run  # a teacher-only run's score is its result: score in this study's setting
    todo = [(d, r) for d, r in needed.items() if r.spec.teacher_only or not teacher_complete(d)]
    if setup.jobs > 1:
        jobs = [Job(f"teacher {d.name} ({r.spec.describe()})", TRAIN_TEACHER, [*teacher_argv(r, setup), *QUIET],
                    setup.out / "logs" / f"teacher-{d.name}.log", _teacher_done(r)) for d, r in todo]
        _raise_failures(run_jobs(jobs, setup.jobs, _prefixed(say)), "teacher")
        return
    for i, (teacher_dir, run) in enumerate(todo, 1):
        action = "scoring" if teacher_complete(teacher_dir) else "training"
        say(f"compare: teacher {i}/{len(todo)}: {action} {teacher_dir} (for {run.spec.describe()})")
        code = call_entry_point(TRAIN_TEACHER, teacher_argv(run, setup), setup.isolate)
        if code != 0:
            raise UserError(f"teacher {teacher_dir}: python -m {TRAIN_TEACHER} exited with status {code} (see its "
                            "message above); rerun the same command to continue")
        if run.spec.teacher_only:
            record_teacher_run(run)


def teacher_argv(run: PlannedRun, setup: StudySetup) -> list[str]:
    return ["--preset", setup.preset, "--config", str(write_options(run, setup))]


def student_argv(run: PlannedRun, setup: StudySetup) -> list[str]:
    return ["--preset", setup.preset, "--config", str(write_options(run, setup)), "--run-dir", str(run.run_dir)]


def _teacher_done(run: PlannedRun) -> Callable[[int, float], str | None]:
    def done(code: int, seconds: float) -> str | None:
        if run.spec.teacher_only:
            record_teacher_run(run)
        return None
    return done


def _student_done(run: PlannedRun) -> Callable[[int, float], str | None]:
    def done(code: int, seconds: float) -> str | None:
        metrics = load_metrics(run)
        if metrics is None:
            return "no metrics.json written"
        if metrics.get("student"):
            return f"test mIoU {100 * metrics['student']['miou']:.1f}"
        if metrics.get("student_val"):
            return f"val mIoU {100 * metrics['student_val']['miou']:.1f} (val only)"
        return None
    return done


def _prefixed(say: Callable[[str], None]) -> Callable[[str], None]:
    return lambda line: say(f"compare: {line}")


def _raise_failures(failures, what: str) -> None:
    if failures:
        listed = "; ".join(f"{f.label} (exit status {f.code}, log {f.log})" for f in failures)
        raise UserError(f"{len(failures)} {what} run(s) failed: {listed}; finished runs are kept, rerun the same "
                        "command to continue")


def record_teacher_run(run: PlannedRun) -> None:
    """A teacher-only run's metrics.json: the store's test score of its teacher, and where it came from."""
    source = run.teacher_dir / METRICS_FILE
    metrics = json.loads(source.read_text())
    metrics.update({"kind": "teacher_only", "teacher_dir": str(run.teacher_dir)})
    write_yaml(run.cfg, run.run_dir / "config.yaml")
    write_json(run.run_dir / METRICS_FILE, metrics)


def _reuse_other_folders(resolved: list, primary_of: dict[str, str], finished: set[str], setup: StudySetup) -> None:
    """Serve an unfinished config from a finished run of another study in the same OUT with the same config.

    E.g. a val-only study at 3 seeds reuses the seed-0 runs of `--tune` whose point it repeats:
    the same config and seed train the same network, so training it again would only cost hours.
    A run that another run starts from (a warm start's baseline) keeps its own folder, since
    those read its student.pt by name. Updates `primary_of` in place.
    """
    starts_from = {name for spec, *_ in resolved for name in spec.after}
    wanted = {key: (spec, cfg) for spec, cfg, _, key in resolved if not spec.teacher_only
              and primary_of[key] not in finished and spec.name not in starts_from and primary_of[key] == spec.name}
    if not wanted:
        return
    taken = {spec.name for spec, *_ in resolved}
    others = _finished_elsewhere(setup.out / RUNS_DIR, taken)
    for key, (spec, cfg) in wanted.items():
        new = compared_config(_as_stored(cfg))
        for name, stored in others:
            if is_finished(setup.out / RUNS_DIR / name, spec.needs_test) and not config_differences(stored, new):
                primary_of[key] = name
                break


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


def execute(planned: Sequence[PlannedRun], setup: StudySetup,
            say: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict[str, int]:
    """Run what is not finished: teachers first, then the student runs; returns {"ran", "skipped", "shared"}."""
    primaries = [r for r in planned if not r.same_as]
    finished = [r for r in primaries if r.done]
    for run in finished:
        check_finished_run(run)
    pending = [r for r in primaries if not r.done]
    counts = {"ran": len(pending), "skipped": len(finished), "shared": len(planned) - len(primaries)}
    say(f"compare: {len(planned)} runs planned: {counts['skipped']} finished earlier (skipped), {counts['shared']} "
        f"served by an identical run, {len(pending)} to do; folders under {setup.out / RUNS_DIR}")
    ensure_teachers(pending, setup, say)
    students = [r for r in pending if not r.spec.teacher_only]
    # runs that start from others' results (warm starts) go last: the second phase with --jobs N
    phases = [[r for r in students if not r.spec.after], [r for r in students if r.spec.after]]
    by_name = {r.spec.name: r for r in planned}
    if setup.jobs > 1:
        for phase, runs in enumerate(phases):
            if not runs:
                continue
            for run in runs:
                check_started_after(run, by_name)
            jobs = [Job(f"run {r.spec.describe()}", DISTILL, [*student_argv(r, setup), *QUIET], r.run_dir / LOG_FILE,
                        _student_done(r)) for r in runs]
            what = "student runs" if phase == 0 else "student runs that start from finished ones"
            say(f"compare: {len(runs)} {what}, {setup.jobs} at a time")
            _raise_failures(run_jobs(jobs, setup.jobs, _prefixed(say)), "student")
            unfinished = [r.spec.name for r in runs if not r.done]
            if unfinished:
                raise UserError(f"runs {', '.join(unfinished)} exited 0 but wrote no {METRICS_FILE}; see their "
                                f"{LOG_FILE}")
        return counts
    students = phases[0] + phases[1]
    progress = Progress()
    for i, run in enumerate(students, 1):
        check_started_after(run, by_name)
        say(f"compare: run {i}/{len(students)}: {run.spec.describe()} -> {run.run_dir} "
            f"({progress.eta(len(students) - i + 1)})")
        started = time.perf_counter()
        code = call_entry_point(DISTILL, student_argv(run, setup), setup.isolate)
        if code != 0 or not run.done:
            raise UserError(f"run {run.spec.name}: python -m {DISTILL} exited with status {code} (see its message "
                            "above); finished runs are kept, rerun the same command to continue")
        progress.durations.append(time.perf_counter() - started)
    return counts


def check_started_after(run: PlannedRun, by_name: dict[str, PlannedRun]) -> None:
    """A run with `after` starts only from finished runs (a warm start needs the baseline's student.pt)."""
    for name in run.spec.after:
        if not by_name[name].done:
            raise UserError(f"run {run.spec.name} starts from run {name}, which has not finished; rerun the same "
                            "command to train it first")


def load_metrics(run: PlannedRun) -> dict | None:
    """The run's metrics.json (the shared run's for a spec served by another), None while unfinished.

    A run made before distill scored the validation split gets its validation score from
    `python -m lix_train.evaluate --checkpoint RUN/student.pt --split val`, if that was run.
    """
    try:
        metrics = json.loads((run.run_dir / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    val_file = run.run_dir / eval_file_name("student", "val", run.cfg.eval.mode)
    if "student_val" not in metrics and val_file.is_file():
        try:
            metrics["student_val"] = json.loads(val_file.read_text())["student"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    return metrics
