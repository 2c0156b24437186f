"""Keep a study's evidence in the repository, so a study longer than one working session can go on.

A study on the CPU protocol takes longer than a session, and run folders do not outlive the machine
they were made on. `save` copies what the tables are made of into a folder that is committed: per
finished run its config.yaml, metrics.json, summary.txt and eval.csv; the study's tables; and every
teacher its runs read (teacher.pt, teacher.json, config.yaml, train.csv, eval.csv). `restore` copies
them back under runs/, where `compare` counts the runs as finished (their metrics.json, their
config.yaml checked as usual) and the teachers as complete (teacher.pt), so the next session
continues the study instead of training it again: the same teacher weights, whatever the machine.
Student weights stay out (3 MB each) except for --keep-weights RUN (the warm-start track starts from
baseline-s<seed>/student.pt). restore never overwrites a file that is already there.

    python -m lix_train.study.archive save --study runs/compare/synthetic --to docs/studies/v2
    python -m lix_train.study.archive restore --from docs/studies/v2 --study runs/compare/synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from lix_train.cli import UserError, run_cli
from lix_common.cli import doc_parser

PROG = "python -m lix_train.study.archive"
RUNS_DIR = "runs"  # a study's run folders (study/planning.py)
TEACHERS_DIR = "teachers"
RUN_FILES = ("config.yaml", "metrics.json", "summary.txt", "eval.csv")
WEIGHT_FILES = ("student.pt",)
TEACHER_FILES = ("teacher.pt", "teacher.json", "config.yaml", "train.csv", "eval.csv")
STUDY_FILES = ("table.md", "table.json", "results.json", "tuning.md", "tuning.json")


def _copy(src: Path, dst: Path, overwrite: bool) -> bool:
    """Copy one file atomically (temp file beside the target, then rename); False when skipped."""
    if dst.exists() and not overwrite:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def _teacher_dirs(metrics: dict) -> list[Path]:
    """The teacher folders a finished run read: a student run's teacher checkpoint's folder in the store, or
    the store folder a teacher-only run (the X = zeros control's) scored, so that restoring the control does
    not mean training its teachers again."""
    if metrics.get("teacher_dir"):  # a teacher-only run (records.py)
        return [Path(metrics["teacher_dir"])]
    checkpoint = (metrics.get("teacher_run") or {}).get("checkpoint")
    return [Path(checkpoint).parent] if checkpoint else []


def save(study: Path, to: Path, keep_weights: list[str]) -> dict[str, int]:
    """Copy the finished runs of `study`, its tables and their teachers into `to` (files there are refreshed)."""
    runs = study / RUNS_DIR
    if not runs.is_dir():
        raise UserError(f"--study {study}: no {RUNS_DIR}/ folder; is it a study folder of python -m lix_train.compare?")
    missing = [k for k in keep_weights if not ((runs / k / "metrics.json").is_file() and (runs / k / WEIGHT_FILES[0]).is_file())]
    if missing:
        raise UserError(f"--keep-weights {missing[0]}: no finished run with a {WEIGHT_FILES[0]} of that name in {runs}")
    counts = {"runs": 0, "teachers": 0, "files": 0}
    teachers: dict[Path, None] = {}
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
        counts["runs"] += 1
        names = RUN_FILES + (WEIGHT_FILES if run.name in keep_weights else ())
        counts["files"] += sum(_copy(run / n, to / RUNS_DIR / run.name / n, True) for n in names if (run / n).is_file())
        try:
            teachers.update(dict.fromkeys(_teacher_dirs(json.loads((run / "metrics.json").read_text()))))
        except (OSError, ValueError) as err:
            raise UserError(f"{run / 'metrics.json'}: not readable ({err})") from None
    for teacher in teachers:
        if not (teacher / TEACHER_FILES[0]).is_file():
            continue  # a --teacher-checkpoint from elsewhere: not a store teacher
        counts["teachers"] += 1
        counts["files"] += sum(_copy(teacher / n, to / TEACHERS_DIR / teacher.name / n, True)
                               for n in TEACHER_FILES if (teacher / n).is_file())
    counts["files"] += sum(_copy(study / n, to / n, True) for n in STUDY_FILES if (study / n).is_file())
    return counts


def restore(source: Path, study: Path, teachers: Path) -> dict[str, int]:
    """Copy an archive's runs into `study`/runs and its teachers into the `teachers` store, never overwriting."""
    if not (source / RUNS_DIR).is_dir():
        raise UserError(f"--from {source}: not a study archive (no {RUNS_DIR}/ folder); write one with `{PROG} save`")
    counts = {"files": 0, "kept": 0}
    pairs = [(f, study / RUNS_DIR / f.relative_to(source / RUNS_DIR)) for f in (source / RUNS_DIR).rglob("*")]
    if (source / TEACHERS_DIR).is_dir():
        pairs += [(f, teachers / f.relative_to(source / TEACHERS_DIR)) for f in (source / TEACHERS_DIR).rglob("*")]
    # teacher.pt last in each teacher folder: its presence means "complete" to the store
    for src, dst in sorted((p for p in pairs if p[0].is_file()), key=lambda p: p[0].name == TEACHER_FILES[0]):
        copied = _copy(src, dst, False)
        counts["files" if copied else "kept"] += 1
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser(PROG, __doc__)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{save,restore}")
    s = sub.add_parser("save", help="copy a study's finished runs, tables and teachers into an archive folder")
    s.add_argument("--study", type=Path, required=True, metavar="DIR", help="the study folder (compare's --out)")
    s.add_argument("--to", type=Path, required=True, metavar="DIR", help="the archive folder (committed)")
    s.add_argument("--keep-weights", default="", metavar="A,B,...",
                   help="runs whose student.pt is kept too (e.g. baseline-s0, where the warm-start track starts)")
    r = sub.add_parser("restore", help="copy an archive back under runs/ (never overwrites)")
    r.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR", help="the archive folder")
    r.add_argument("--study", type=Path, required=True, metavar="DIR", help="the study folder to continue")
    r.add_argument("--teachers", type=Path, default=Path("runs/teachers"), metavar="DIR",
                   help="the teacher store (output.teachers_dir)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.action == "save":
        keep = [k.strip() for k in args.keep_weights.split(",") if k.strip()]
        counts = save(args.study, args.to, keep)
        print(f"saved {counts['runs']} finished runs and {counts['teachers']} teacher(s) of {args.study} into "
              f"{args.to} ({counts['files']} files written)")
    else:
        counts = restore(args.source, args.study, args.teachers)
        print(f"restored {counts['files']} files from {args.source} into {args.study} and {args.teachers} "
              f"({counts['kept']} already there, left as they were)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
