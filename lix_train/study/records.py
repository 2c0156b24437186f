"""A study run's record in its folder: finished or not, its metrics, and the teacher store's files.

A run folder holds a finished run once distill (or, for a teacher-only run, the study) wrote its
metrics.json; a teacher-only run's metrics.json copies the store's score of its teacher.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lix_train.config import write_yaml
from lix_train.evaluate import eval_file_name
from lix_train.report import METRICS_FILE, write_json

if TYPE_CHECKING:
    from lix_train.study.planning import PlannedRun

TEACHER_FILE = "teacher.pt"


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


def teacher_complete(teacher_dir: Path) -> bool:
    return (teacher_dir / TEACHER_FILE).is_file()


def record_teacher_run(run: PlannedRun) -> None:
    """A teacher-only run's metrics.json: the store's test score of its teacher, and where it came from."""
    source = run.teacher_dir / METRICS_FILE
    metrics = json.loads(source.read_text())
    metrics.update({"kind": "teacher_only", "teacher_dir": str(run.teacher_dir)})
    write_yaml(run.cfg, run.run_dir / "config.yaml")
    write_json(run.run_dir / METRICS_FILE, metrics)
