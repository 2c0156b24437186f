"""The study archive: a study's evidence (finished runs, tables, teachers) saved into a committed folder and
restored under runs/ so that `compare` continues the study instead of training it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lix_train.cli import UserError
from lix_train.study import archive
from lix_train.study.records import is_finished, teacher_complete


def _study(tmp_path: Path) -> tuple[Path, Path]:
    teacher = tmp_path / "runs" / "teachers" / "abc123"
    teacher.mkdir(parents=True)
    for name in ("teacher.pt", "teacher.json", "config.yaml", "eval.csv", "train.csv"):
        (teacher / name).write_text(name)
    (teacher / "checkpoints").mkdir()
    (teacher / "checkpoints" / "latest.pt").write_text("optimiser state: not evidence")
    study = tmp_path / "runs" / "compare" / "synthetic"
    for name, finished in (("baseline-s0", True), ("cwd-s0", True), ("lix-s0", False)):
        run = study / "runs" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"{name} config")
        (run / "student.pt").write_text("weights")
        (run / "train.log").write_text("log")
        if finished:
            (run / "metrics.json").write_text(json.dumps({"teacher_run": {"checkpoint": str(teacher / "teacher.pt")}}))
    (study / "table.md").write_text("| table |")
    return study, teacher


def test_save_keeps_the_teacher_a_teacher_only_control_run_scored(tmp_path, capsys):
    """The X = zeros control's extra teacher seeds are teacher-only runs: their metrics.json names the store
    folder (teacher_dir), not a student's teacher checkpoint; the archive must keep those teachers too."""
    study, _ = _study(tmp_path)
    control_teacher = tmp_path / "runs" / "teachers" / "def456"
    control_teacher.mkdir(parents=True)
    for name in archive.TEACHER_FILES:
        (control_teacher / name).write_text(name)
    run = study / "runs" / "control-zero_x-t1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("control config")
    (run / "metrics.json").write_text(json.dumps({"kind": "teacher_only", "teacher_dir": str(control_teacher)}))
    out = tmp_path / "archive"
    archive.main(["save", "--study", str(study), "--to", str(out)])
    assert "saved 3 finished runs and 2 teacher(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "teachers").iterdir()) == ["abc123", "def456"]


def test_save_keeps_the_evidence_of_finished_runs_and_their_teacher(tmp_path, capsys):
    study, teacher = _study(tmp_path)
    out = tmp_path / "docs" / "studies" / "v2"
    assert archive.main(["save", "--study", str(study), "--to", str(out), "--keep-weights", "baseline-s0"]) == 0
    assert "saved 2 finished runs and 1 teacher(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["baseline-s0", "cwd-s0"]  # lix-s0 is unfinished
    assert sorted(p.name for p in (out / "runs" / "cwd-s0").iterdir()) == ["config.yaml", "metrics.json"]
    assert (out / "runs" / "baseline-s0" / "student.pt").read_text() == "weights"  # --keep-weights
    assert sorted(p.name for p in (out / "teachers" / "abc123").iterdir()) == sorted(archive.TEACHER_FILES)
    assert (out / "table.md").is_file()
    with pytest.raises(UserError, match="--keep-weights lix-s0: no finished run"):
        archive.save(study, out, ["lix-s0"])
    with pytest.raises(UserError, match="no runs/ folder"):
        archive.save(tmp_path / "docs", out, [])


def test_restore_makes_the_runs_finished_and_the_teacher_complete_without_overwriting(tmp_path, capsys):
    study, _ = _study(tmp_path / "before")
    saved = tmp_path / "archive"
    archive.save(study, saved, [])
    fresh_study, fresh_teachers = tmp_path / "after" / "study", tmp_path / "after" / "teachers"
    (fresh_study / "runs" / "cwd-s0").mkdir(parents=True)
    (fresh_study / "runs" / "cwd-s0" / "config.yaml").write_text("a newer local run")
    assert archive.main(["restore", "--from", str(saved), "--study", str(fresh_study),
                         "--teachers", str(fresh_teachers)]) == 0
    assert "(1 already there, left as they were)" in capsys.readouterr().out
    assert is_finished(fresh_study / "runs" / "baseline-s0") and is_finished(fresh_study / "runs" / "cwd-s0")
    assert (fresh_study / "runs" / "cwd-s0" / "config.yaml").read_text() == "a newer local run"
    assert teacher_complete(fresh_teachers / "abc123")
    assert not (fresh_teachers / "abc123" / "checkpoints").exists()
    with pytest.raises(UserError, match="not a study archive"):
        archive.restore(tmp_path, fresh_study, fresh_teachers)


def test_git_commits_what_an_archive_under_docs_studies_holds():
    """.gitignore ignores the working runs/ folder at the root only: an archive's runs/ and teachers/
    under docs/studies must reach the repository (a `runs/` pattern once kept every archived run out)."""
    import shutil
    import subprocess

    from repo_paths import ROOT

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    inside = ["docs/studies/v2/tune/runs/tune-baseline-s0/metrics.json",
              "docs/studies/v2/tune/teachers/3af1576af9d3/teacher.pt"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *inside], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == [], f"ignored by .gitignore: {ignored.stdout.split()}"
    work = subprocess.run(["git", "check-ignore", "--no-index", "runs/compare/x/metrics.json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert work.stdout.strip() == "runs/compare/x/metrics.json"  # the working runs/ stays out
