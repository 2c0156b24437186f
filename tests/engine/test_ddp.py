"""Two CPU processes on gloo (torchrun, loopback only): rank-0-only files, identical weights,
and an all-reduced evaluation equal to the single-process one.

The test launches this file under `python -m torch.distributed.run --nproc_per_node 2
--standalone`; in that mode each rank trains a few iterations and writes what it saw to
<out>/rank<r>.pt for the test to compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from engine_fakes import NUM_CLASSES, FakeDistiller, SyntheticSegmentation
from lix_train.engine import checkpoint as ckpt_io
from lix_train.engine.checkpoint import load_checkpoint, model_signature
from lix_train.engine.config import TrainConfig
from lix_train.engine.loader_scoring import score_loader
from lix_train.engine.logging import read_csv
from repo_paths import HELPERS, ROOT

ITERS = 4
EVAL_IMAGES = 5  # odd on purpose: a padding sampler would score one image twice


def worker(out: Path) -> None:
    from lix_train.engine.distributed import cleanup, init_distributed
    from lix_train.engine.trainer import Trainer

    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    saves = []
    real_save = ckpt_io.atomic_torch_save
    ckpt_io.atomic_torch_save = lambda obj, path: saves.append(str(path)) or real_save(obj, path)
    torch.manual_seed(0)
    task = FakeDistiller()
    cfg = TrainConfig(iters=ITERS, batch_size=2, lr=0.05, warmup_iters=1, ckpt_every=2, log_every=1,
                      eval_every=0, num_workers=0, tensorboard=True, progress=False, device="cpu", seed=1)
    trainer = Trainer(task, SyntheticSegmentation(length=12), cfg, out / "run",
                      signature=model_signature("tiny", {}, NUM_CLASSES),
                      eval_set=SyntheticSegmentation(length=EVAL_IMAGES, seed=7))
    summary = trainer.run()
    torch.save({"world_size": info.world_size, "saves": saves, "student": task.student.state_dict(),
                "dwc": task.dwc.state_dict(), "confusion": summary.last_eval["confusion"],
                "eval_shard": len(trainer.eval_loader.sampler)}, out / f"rank{info.rank}.pt")
    cleanup()


def test_two_gloo_processes(tmp_path):
    result = _torchrun(str(tmp_path), timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # rank 0 alone writes checkpoints and logs
    assert [Path(p).name for p in ranks[0]["saves"]] == ["latest.pt", "latest.pt", "best.pt"]
    assert ranks[1]["saves"] == []
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "run" / "train.csv")] == list(range(1, ITERS + 1))
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.*"))) == 1
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["iteration"] == ITERS and len(ckpt["rng"]) == 2

    # DDP keeps the replicas identical (student and the extra DWC module)
    for key in ("student", "dwc"):
        for name, value in ranks[0][key].items():
            assert torch.equal(value, ranks[1][key][name]), f"{key}.{name} differs between ranks"

    # each rank scored its own shard; the all-reduced matrix equals a single-process evaluation
    assert [r["eval_shard"] for r in ranks] == [3, 2]
    assert ranks[0]["confusion"] == ranks[1]["confusion"]
    task = FakeDistiller()
    task.student.load_state_dict(ranks[0]["student"])
    task.eval()
    single = score_loader(task.forward_test, DataLoader(SyntheticSegmentation(length=EVAL_IMAGES, seed=7)), NUM_CLASSES)
    assert single["confusion"] == ranks[0]["confusion"]
    assert sum(map(sum, single["confusion"])) == EVAL_IMAGES * 16 * 14


def leaver(failing_rank: int) -> int:
    """A CLI body (run_cli) that joins the group, all-reduces once, then fails on `failing_rank` only."""
    import argparse

    from lix_train.cli import UserError, run_cli
    from lix_train.engine.distributed import init_distributed

    def body(args: argparse.Namespace) -> int:
        info = init_distributed(torch.device("cpu"))
        torch.distributed.all_reduce(torch.ones(1))
        if info.rank == failing_rank:
            raise UserError("this rank was told to fail")
        return 0

    return run_cli(argparse.ArgumentParser(prog="leaver"), [], body)


def _torchrun(*argv: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HELPERS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", __file__, *argv]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ranks_leave_the_group_together_and_a_failed_rank_does_not_strand_the_others():
    """run_cli's cleanup waits for every finished rank before tearing gloo down, and skips that wait
    on a failed rank: the job ends at once with the failure's one line, not a hang or a peer's traceback."""
    assert _torchrun("--leaver", "-1", timeout=120).returncode == 0  # nobody fails
    for failing in (0, 1):
        result = _torchrun("--leaver", str(failing), timeout=120)
        assert result.returncode != 0
        assert f"leaver: error [rank {failing}]: this rank was told to fail" in result.stderr
        assert "Connection closed by peer" not in result.stderr, result.stderr[-3000:]


if __name__ == "__main__":
    if sys.argv[1] == "--leaver":
        sys.exit(leaver(int(sys.argv[2])))
    worker(Path(sys.argv[1]))
