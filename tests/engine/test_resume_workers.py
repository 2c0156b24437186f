"""Resume is exact with loader workers: augmentation is seeded by (seed, rank, epoch, position), not by worker RNG.

Two tiny runs train a FakeDistiller on augmented frames (random scale, crop, flip, colour jitter)
read by 2 loader workers; one is interrupted after a checkpoint and resumed. The weights must be
bit-identical (tests/engine/test_resume.py kills a num_workers 0 run with SIGKILL; the interruption here
is an exception after the checkpoint, which leaves the same checkpoint behind).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_fakes import NUM_CLASSES, SIG, FakeDistiller
from lix_train.data.classes import VKITTI2
from lix_train.data.build import build_train_transforms
from lix_train.data.dataset import SegmentationDataset
from lix_train.data.sample import Sample, intrinsics_matrix
from lix_train.data.transforms import TransformConfig
from lix_train.engine.checkpoint import load_checkpoint
from lix_train.engine.config import TrainConfig
from lix_train.engine.trainer import Trainer

ITERS, STOP_AFTER = 12, 8  # checkpoints every 3 iterations: the interrupted run's latest.pt is at 6


class FramesSource:
    """Ten random 20x28 frames with labels in 0..2 and depth."""

    class_set = VKITTI2
    has_depth = True

    def __init__(self, n: int = 10):
        self.names = [f"mem/{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        rng = np.random.default_rng(i)
        h, w = 20, 28
        return Sample(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, (h, w), np.uint8),
                      rng.uniform(2, 40, (h, w)).astype(np.float32), intrinsics_matrix(30.0, 30.0, w / 2, h / 2),
                      self.names[i])


class Interrupted(Exception):
    pass


def train(run_dir: Path, workers: int, stop_after: int | None = None) -> FakeDistiller:
    cfg = TrainConfig(iters=ITERS, batch_size=4, lr=0.02, warmup_iters=2, ckpt_every=3, log_every=2, eval_every=0,
                      num_workers=workers, tensorboard=False, progress=False, device="cpu", deterministic=True, seed=5)
    torch.manual_seed(cfg.seed)
    task = FakeDistiller()
    transforms = build_train_transforms(TransformConfig(size=(16, 16), crop_size=(16, 16)))
    data = SegmentationDataset(FramesSource(), "inverse_depth", transforms)
    trainer = Trainer(task, data, cfg, run_dir, signature=SIG)
    if stop_after is not None:
        step = trainer._step

        def step_then_stop(batch, iteration):
            if iteration > stop_after:
                raise Interrupted(iteration)
            return step(batch, iteration)

        trainer._step = step_then_stop
    trainer.run()
    return task


def _weights(task: FakeDistiller) -> dict[str, torch.Tensor]:
    return {**{f"student.{k}": v for k, v in task.student.state_dict().items()},
            **{f"dwc.{k}": v for k, v in task.dwc.state_dict().items()}}


@pytest.fixture
def one_thread(one_thread, monkeypatch):
    """The room's one_thread, on a machine that says it has 8 CPUs."""
    from lix_train.engine import device

    monkeypatch.setattr(device, "available_cpus", lambda: 8)  # really 2 workers, even on a 2-core machine


def test_resumed_run_with_two_workers_is_bit_identical(tmp_path, one_thread):
    reference = _weights(train(tmp_path / "reference", workers=2))
    run_dir = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        train(run_dir, workers=2, stop_after=STOP_AFTER)
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["iteration"] == 6
    resumed = _weights(train(run_dir, workers=2))
    differing = [name for name in reference if not torch.equal(reference[name], resumed[name])]
    assert differing == [], f"{len(differing)} of {len(reference)} tensors differ after resume"
    # The stream depends on neither the worker count nor the workers' RNG: one process gives the same weights.
    single = _weights(train(tmp_path / "no_workers", workers=0))
    assert all(torch.equal(reference[name], single[name]) for name in reference)
