"""A run killed with SIGKILL after a checkpoint resumes and ends where an uninterrupted run ends.

The killed run is a subprocess running this file as a script (slowed down by a per-sample
delay so the kill lands mid-training); the reference and the resumed run execute in-process.
Everything is deterministic (num_workers=0, one thread, fixed seeds, dropout in the model, so
RNG restoration matters), so the final weights must match to float rounding.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine_fakes import SIG, FakeDistiller, SyntheticSegmentation
from lix_train.engine.checkpoint import load_checkpoint
from lix_train.engine.config import TrainConfig
from lix_train.engine.logging import read_csv
from lix_train.engine.trainer import Trainer
from repo_paths import HELPERS, ROOT

ITERS = 24


def train(run_dir: Path, delay: float = 0.0):
    """The same deterministic tiny run every time; returns (task, summary)."""
    cfg = TrainConfig(iters=ITERS, batch_size=4, lr=0.02, warmup_iters=3, ckpt_every=4, log_every=2, eval_every=0,
                      num_workers=0, tensorboard=True, progress=False, device="cpu", deterministic=True, seed=3)
    torch.manual_seed(cfg.seed)
    task = FakeDistiller()
    trainer = Trainer(task, SyntheticSegmentation(length=10, delay=delay), cfg, run_dir, signature=SIG)
    return task, trainer.run()


def test_killed_run_resumes_to_the_same_result(tmp_path, one_thread):
    reference_task, reference = train(tmp_path / "reference")

    run_dir = tmp_path / "killed"
    latest = run_dir / "checkpoints" / "latest.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, str(run_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not latest.exists():
            assert proc.poll() is None, f"training subprocess exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared within 90 s"
            time.sleep(0.02)
        time.sleep(0.3)  # let it run past the checkpoint, so there is work to lose and redo
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(latest)["iteration"]
    assert 0 < killed_at < ITERS, "the kill must land mid-training"
    logged_before_resume = [int(r["iteration"]) for r in read_csv(run_dir / "train.csv")]
    assert max(logged_before_resume) >= killed_at

    resumed_task, resumed = train(run_dir)
    assert (resumed.start_iteration, resumed.iterations) == (killed_at, ITERS)
    assert resumed.iterations_run == ITERS - killed_at and resumed.resumed_from == latest
    for (name, a), b in zip(reference_task.student.state_dict().items(), resumed_task.student.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"student.{name} differs after resume")
    torch.testing.assert_close(resumed_task.dwc.weight, reference_task.dwc.weight, rtol=1e-5, atol=1e-6)
    assert resumed.final_losses == pytest.approx(reference.final_losses, rel=1e-5)

    # the log reads as one history: rows after the checkpoint were dropped and written again
    rows, reference_rows = read_csv(run_dir / "train.csv"), read_csv(tmp_path / "reference" / "train.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(2, ITERS + 1, 2))
    for row, ref in zip(rows, reference_rows):
        assert float(row["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-4)
        assert float(row["lr"]) == pytest.approx(float(ref["lr"]), rel=1e-6)


if __name__ == "__main__":  # the run that gets killed
    torch.set_num_threads(1)
    train(Path(sys.argv[1]), delay=0.02)
