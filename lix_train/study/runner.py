"""Run the planned study (planning.py) through the project's own entry points.

Teachers come first, through `python -m lix_train.train_teacher` into the shared store: one per
teacher config, trained once (or reused) and scored on the test split, so the student runs only
ever reuse them and the ETA counts student runs alone. Then every student run is
`python -m lix_train.distill` with its options (PlannedRun.command).

Resumable: a run whose folder holds metrics.json is finished and skipped; any other run is
started again in its folder, where the trainer continues from checkpoints/latest.pt (a run that
needs test scores and holds val-only metrics only scores test). A run with `after` (a warm
start) starts only once those runs have finished: one after another they come last, with
--jobs N in a second phase.

In-process by default (no interpreter or torch start-up per run; memory is released between
runs); `isolate=True` starts a fresh Python per run, which bounds memory whatever a run leaks.
`jobs=N` runs N of them side by side, each in its own process with its log in its folder
(parallel.py): teachers first, then the student runs.
"""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

from lix_train.cli import UserError
from lix_train.report import METRICS_FILE, write_text
from lix_train.study.parallel import Job, run_jobs
from lix_train.study.planning import (
    DISTILL, RUNS_DIR, TRAIN_TEACHER, PlannedRun, StudySetup, check_finished_run, check_start_weights, run_options,
    seed_trained_runs,
)
from lix_train.study.records import load_metrics, record_teacher_run, teacher_complete

LOG_FILE = "train.log"
# Progress bars would flood the per-run logs of parallel runs (bookkeeping only: not compared).
QUIET = ["--teacher.train.progress", "false", "--student.train.progress", "false"]


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


def execute(planned: Sequence[PlannedRun], setup: StudySetup,
            say: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict[str, int]:
    """Run what is not finished: teachers first, then the student runs; returns {"ran", "skipped", "shared"}."""
    primaries = [r for r in planned if not r.same_as]
    finished = [r for r in primaries if r.done]
    for run in finished:
        check_finished_run(run)
    check_start_weights(planned)
    pending = [r for r in primaries if not r.done]
    counts = {"ran": len(pending), "skipped": len(finished), "shared": len(planned) - len(primaries)}
    seeded = seed_trained_runs(pending, setup.out / RUNS_DIR)
    scored_only = sum(1 for r in pending if r.trained_in)
    say(f"compare: {len(planned)} runs planned: {counts['skipped']} finished earlier (skipped), {counts['shared']} "
        f"served by an identical run, {len(pending)} to do"
        + (f" ({scored_only} of them trained earlier by an identical run: only scored here)" if scored_only else "")
        + f"; folders under {setup.out / RUNS_DIR}")
    for run in seeded:
        say(f"compare: {run.spec.name} starts from the final checkpoint of {run.trained_in} (the same config and seed)")
    ensure_teachers(pending, setup, say)
    students = [r for r in pending if not r.spec.teacher_only]
    # runs that start from others' results (warm starts) go last: the second phase with --jobs N
    phases = [[r for r in students if not r.spec.after], [r for r in students if r.spec.after]]
    by_name = {r.spec.name: r for r in planned}
    if setup.jobs > 1:
        _run_side_by_side(phases, by_name, setup, say)
    else:
        _run_one_by_one(phases[0] + phases[1], by_name, setup, say)
    return counts


def _run_side_by_side(phases: Sequence[Sequence[PlannedRun]], by_name: dict[str, PlannedRun], setup: StudySetup,
                      say: Callable[[str], None]) -> None:
    """--jobs N: each phase's student runs N at a time, each in its own process with its log in its folder."""
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


def _run_one_by_one(students: Sequence[PlannedRun], by_name: dict[str, PlannedRun], setup: StudySetup,
                    say: Callable[[str], None]) -> None:
    """The student runs one after another (in this process unless isolated), with an ETA."""
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


def check_started_after(run: PlannedRun, by_name: dict[str, PlannedRun]) -> None:
    """A run with `after` starts only from finished runs (a warm start needs the baseline's student.pt)."""
    for name in run.spec.after:
        if not by_name[name].done:
            raise UserError(f"run {run.spec.name} starts from run {name}, which has not finished; rerun the same "
                            "command to train it first")
