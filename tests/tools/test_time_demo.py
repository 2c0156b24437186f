"""benchmarks/time_demo.sh: the README's `make demo` timing, from a fresh clone with an empty cache.

The real command takes ten minutes; these tests give it a stand-in DEMO_CMD in a throwaway repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from repo_paths import ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the script clones with git")

FAKE_SUMMARY = "teacher 49.4\nwall time\n  teacher training 1.0 s\n  total 2.0 s\ndistillation gain +2.1\n"


def _repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "time_demo.sh", repo / "benchmarks" / "time_demo.sh")
    (repo / "tracked.txt").write_text("in the clone\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    (repo / "untracked.txt").write_text("not in the clone\n")
    return repo


def _time(repo, tmp_path, demo_cmd, **env):
    return subprocess.run(["bash", "benchmarks/time_demo.sh"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), "DEMO_CMD": demo_cmd, **env})


def test_it_times_the_command_in_a_fresh_clone_with_an_empty_cache_and_removes_the_clone(tmp_path):
    repo = _repo(tmp_path)
    (tmp_path / "summary.txt").write_text(FAKE_SUMMARY)
    check = ('test -f tracked.txt && test ! -e untracked.txt && test -z "$(ls -A "$LIX_SEG_CACHE")" '
             f'&& mkdir -p runs/demo && cp {tmp_path / "summary.txt"} runs/demo/')
    done = _time(repo, tmp_path, check)
    assert done.returncode == 0, done.stderr
    assert "in a fresh clone at" in done.stdout and "empty dataset cache" in done.stdout
    assert "load average before:" in done.stdout and "load average after:" in done.stdout
    assert "wall time\n  teacher training 1.0 s\n  total 2.0 s\n" in done.stdout  # the run's own block
    assert "distillation gain" not in done.stdout
    assert re.search(r" took \d+ s \(\d+ min \d\d s\) in all\n$", done.stdout)
    assert not list(tmp_path.glob("lix-demo-time.*"))


def test_a_failing_demo_keeps_the_clone_and_shows_its_log(tmp_path):
    done = _time(_repo(tmp_path), tmp_path, "echo the log says why; exit 3")
    assert done.returncode == 3
    assert "the log says why" in done.stderr and "failed (exit 3)" in done.stderr
    kept = list(tmp_path.glob("lix-demo-time.*"))
    assert len(kept) == 1 and (kept[0] / "demo.log").is_file()
