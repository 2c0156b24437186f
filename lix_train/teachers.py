"""The shared teacher store: train a teacher once, reuse it for every student distilled from it.

A teacher lives in `output.teachers_dir/<teacher_hash>/` (experiment.teacher_key: the training
data, the teacher network and its training settings), so every distillation run, method and
seed that asks for the same teacher finds it:

    teacher.pt      final weights + signature (engine checkpoint format, weights only);
                    written last, atomically: its presence means "complete"
    teacher.json    the key, iterations, training wall time, last validation metrics
    config.yaml     the full config of the run that trained it
    checkpoints/latest.pt, train.csv, eval.csv, tensorboard/   the engine's run folder

A complete teacher is reused; an interrupted one is resumed from checkpoints/latest.pt. Rank 0
holds an advisory lock while training, so two jobs asking for the same teacher at once train it
once (the second waits, then reuses it).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lix_train.cli import UserError, shared
from lix_train.config import to_dict, write_yaml
from lix_train.data.build import build_datasets
from lix_train.engine.checkpoint import atomic_torch_save, build_checkpoint
from lix_train.engine.distributed import barrier, get_info
from lix_train.engine.task import SupervisedTask
from lix_train.engine.trainer import Trainer
from lix_train.experiment import ExperimentConfig, build_network, network_signature, teacher_hash, teacher_key
from lix_train.heldout import TEACHER_INPUTS
from lix_train.locking import exclusive
from lix_train.report import git_commit, software_environment, write_json

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"
RECORD_FILE = "teacher.json"
LOCK_FILE = ".lock"


@dataclass
class TeacherResult:
    """Where the teacher is and whether this call trained it."""

    checkpoint: Path
    run_dir: Path
    trained: bool
    wall_time_s: float  # spent in this call (0 when reused)
    record: dict = field(default_factory=dict)

    @property
    def train_wall_time_s(self) -> float | None:
        """Wall time of the training that produced it (this call's or, when reused, the original)."""
        return self.record.get("train_wall_time_s")


def teacher_run_dir(cfg: ExperimentConfig) -> Path:
    """runs/teachers/<hash> for this config's teacher."""
    return cfg.output.teachers_dir / teacher_hash(cfg)


def read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _without_confusion(metrics: dict | None) -> dict | None:
    return None if metrics is None else {k: v for k, v in metrics.items() if k != "confusion"}


def ensure_teacher(cfg: ExperimentConfig, run_dir: Path, *, root: Path, resume: Path | bool | None = None) -> TeacherResult:
    """The teacher's checkpoint in `run_dir`: reused when complete, else trained (or resumed) there.

    Every process of a torchrun job calls this (training is collective); only rank 0 writes.
    `resume` True / a path retrains from that checkpoint even when teacher.pt exists.
    """
    info = get_info()
    run_dir = Path(run_dir)
    final = run_dir / TEACHER_FILE
    with exclusive(run_dir / LOCK_FILE, enabled=info.is_main, prune_parent=True):
        complete = shared(final.is_file())
        if complete and not resume:
            log.info("reusing the teacher in %s", run_dir)
            return TeacherResult(final, run_dir, trained=False, wall_time_s=0.0, record=read_record(run_dir))
        started = time.perf_counter()
        log.info("training the teacher in %s", run_dir)
        data = build_datasets(cfg.data, cfg.data.modality, ("train", "val"), root)
        network = build_network("teacher", cfg.teacher.model, seed=cfg.teacher.train.seed)
        signature = network_signature("teacher", cfg.teacher.model)
        task = SupervisedTask(network, input_keys=TEACHER_INPUTS)
        explicit = resume if isinstance(resume, (str, Path)) else None
        try:
            trainer = Trainer(task, data["train"], cfg.teacher.train, run_dir, signature=signature,
                              eval_set=data["val"], class_names=data["train"].class_set.names, run_config=cfg,
                              resume=explicit)
        except ValueError as err:  # e.g. fewer training frames than one batch
            raise UserError(f"teacher.train: {err}") from None
        summary = trainer.run()
        record = {
            "key": teacher_key(cfg), "hash": teacher_hash(cfg), "iterations": summary.iterations,
            "train_wall_time_s": summary.wall_time_s,  # of this call; a resumed run counts only its part
            "resumed_from": str(summary.resumed_from) if summary.resumed_from else None,
            "val": _without_confusion(summary.last_eval), "final_losses": summary.final_losses,
            "commit": git_commit(),  # the code that trained it (this call's part, for a resumed teacher)
            "environment": software_environment(),
        }
        if info.is_main:
            write_yaml(cfg, run_dir / "config.yaml")
            ckpt = build_checkpoint(model=network, signature=signature, iteration=summary.iterations,
                                    config=to_dict(cfg), metrics={"val": summary.last_eval})
            atomic_torch_save(ckpt, final)
            write_json(run_dir / RECORD_FILE, record)
        barrier()
        return TeacherResult(final, run_dir, trained=True, wall_time_s=time.perf_counter() - started, record=record)
