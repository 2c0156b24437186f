"""Run several trainings side by side, each in its own Python process with its output in a log file.

Why: a study is dozens of runs that each compute on one thread (runtime.threads: 1) with one
loader process, so on a machine with N free cores N runs at a time finish about N times sooner
than one after another. Output goes to one log per run (interleaved progress bars would be
unreadable); the console gets a line when a run starts and when it ends.

A failed run stops new starts; the runs already going are let finish (their work is kept), then
the failure is raised naming the run and its log. Ctrl-C terminates the children; every run
continues from its last checkpoint when the study is called again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


@dataclass
class Job:
    """One `python -m module argv...` with its log file and what to do when it ends."""

    label: str
    module: str
    argv: list[str]
    log: Path
    on_done: Callable[[int, float], str | None] = lambda code, seconds: None  # -> extra text for the end line


@dataclass
class Failure:
    label: str
    code: int
    log: Path


def _start(job: Job) -> tuple[subprocess.Popen, object]:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(job.log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", job.module, *job.argv], stdout=handle, stderr=subprocess.STDOUT)
    return proc, handle


def run_jobs(jobs: Sequence[Job], workers: int, say: Callable[[str], None], poll_s: float = 0.5) -> list[Failure]:
    """Run the jobs, at most `workers` at a time, in order; returns the failures (empty when all exit 0)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: need at least 1")
    pending = deque(jobs)
    running: dict[subprocess.Popen, tuple[Job, object, float]] = {}
    failures: list[Failure] = []
    total, finished = len(jobs), 0
    try:
        while pending or running:
            while pending and not failures and len(running) < workers:
                job = pending.popleft()
                proc, handle = _start(job)
                running[proc] = (job, handle, time.perf_counter())
                say(f"started {job.label} (log {job.log})")
            if failures and not running:
                break
            time.sleep(poll_s)
            for proc in [p for p in running if p.poll() is not None]:
                job, handle, started = running.pop(proc)
                handle.close()
                finished += 1
                seconds = time.perf_counter() - started
                if proc.returncode != 0:
                    failures.append(Failure(job.label, proc.returncode, job.log))
                    say(f"FAILED {job.label}: exit status {proc.returncode} after {seconds / 60:.1f} min; see {job.log}")
                    continue
                extra = job.on_done(proc.returncode, seconds)
                say(f"finished {job.label} ({finished}/{total}) in {seconds / 60:.1f} min" + (f": {extra}" if extra else ""))
    except BaseException:
        for proc, (_, handle, _) in running.items():
            proc.terminate()
        for proc, (_, handle, _) in running.items():
            proc.wait()
            handle.close()
        raise
    return failures
