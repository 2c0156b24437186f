"""The training loop: an iteration budget, resumable at any checkpoint, on one or many processes.

    trainer = Trainer(task, train_set, cfg.train, run_dir, signature=model_signature(...),
                      eval_set=val_set, class_names=class_set.names)
    summary = trainer.run()

Run directory: checkpoints/latest.pt (+ best.pt, iter_*.pt), train.csv, eval.csv,
tensorboard/. A run whose directory already holds checkpoints/latest.pt continues from it
(or from an explicit `resume` path): weights, optimizer, schedule, AMP scaler, extra modules,
RNG states and the position in the data order are restored, so the resumed run follows the
uninterrupted one. The data order of an epoch depends only on (seed, epoch), and each sample's
augmentation only on (seed, rank, epoch, position): the sampler hands the dataset a SeededIndex
(distributed.py), so neither depends on loader workers' RNG, and a resumed run is bit-identical
to the uninterrupted one at any num_workers. A fresh run with
`train.init_from` starts from that file's network weights (signature-checked), with a fresh
optimiser and schedule.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lix_train.config import to_dict
from lix_train.engine import checkpoint as ckpt_io
from lix_train.data.skipping import note_worker_skips
from lix_train.engine.batch import as_batch, batch_size_of, to_device
from lix_train.engine.config import TrainConfig
from lix_train.engine.device import Runtime, available_cpus, loader_workers, make_runtime, select_device
from lix_train.engine.distributed import (
    DistInfo, ResumableSampler, ShardSampler, all_gather_objects, all_reduce_sum, barrier, broadcast_buffers,
    get_info, process_device,
)
from lix_train.engine.loader_scoring import score_loader
from lix_train.engine.logging import RunLogger, Throughput
from lix_train.engine.optim import make_optimizer
from lix_train.engine.rng import capture_rng_state, configure_determinism, restore_rng_state, seed_everything
from lix_train.engine.schedule import make_scheduler
from lix_train.engine.task import extra_modules, input_keys_of, trained_network

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stopped before applying that step."""

    def __init__(self, iteration: int, term: str, value: float, checkpoint: Path | None):
        self.iteration, self.term, self.value, self.checkpoint = iteration, term, value, checkpoint
        kept = (f"the last good checkpoint {checkpoint} was left untouched" if checkpoint
                else "no checkpoint was written yet")
        super().__init__(f"loss term {term!r} is {value} at iteration {iteration}; training stopped, {kept}. "
                         "Lower train.lr, enable train.grad_clip, or check the inputs of that term.")


@dataclass
class TrainSummary:
    """What a run() call did."""

    start_iteration: int
    iterations: int
    iterations_run: int
    wall_time_s: float
    final_losses: dict[str, float]
    last_eval: dict | None = None
    best_miou: float | None = None
    checkpoint: Path | None = None
    resumed_from: Path | None = None
    images_per_s: float = field(default=math.nan)  # over the whole call, evaluation included

    def as_dict(self) -> dict:
        """Plain values (paths as strings) for a summary.json."""
        out = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


class _TrainStep(nn.Module):
    """forward() = task.forward_train(), so DistributedDataParallel sees the training computation."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.task = task

    def forward(self, image, x, target, progress):
        return self.task.forward_train(image, x, target, progress)


class Trainer:
    """Optimises a TrainTask (task.py) for `cfg.iters` iterations; see the module docstring.

    Arguments:
        task: a Distiller or SupervisedTask (forward_train / forward_test / parameter getters).
        train_set, eval_set: map-style datasets yielding batches per batch.py (collated by
            `collate_fn`, default torch's); eval_set is optional.
        cfg: TrainConfig. `run_dir`: where checkpoints and logs go.
        signature: checkpoint.model_signature(...) of the trained network; checked on resume.
        class_names: for per-class IoU keys (default "0", "1", ...).
        network: the module whose weights are the product (default: task.student / task.network).
        run_config: the full resolved config, stored in checkpoints (default: cfg).
        resume: explicit checkpoint to continue from; default run_dir/checkpoints/latest.pt if present.
    """

    def __init__(
        self,
        task: nn.Module,
        train_set: Dataset,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        signature: Mapping[str, Any],
        eval_set: Dataset | None = None,
        class_names: Sequence[str] | None = None,
        collate_fn: Callable | None = None,
        network: nn.Module | None = None,
        run_config: Any = None,
        resume: str | Path | None = None,
        dist_info: DistInfo | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.signature = dict(signature)
        self.num_classes = int(self.signature["num_classes"])
        self.class_names = list(class_names) if class_names is not None else None
        self.info = dist_info or get_info()
        self.explicit_resume = Path(resume) if resume else None
        if self.explicit_resume is not None and not self.explicit_resume.is_file():
            raise ckpt_io.CheckpointError(self.explicit_resume, "resume checkpoint not found")
        self.run_config = to_dict(run_config if run_config is not None else cfg)
        if not isinstance(self.run_config, dict):
            self.run_config = {"config": self.run_config}

        configure_determinism(cfg.deterministic)
        seed_everything(cfg.seed + self.info.rank)
        device = process_device(select_device(cfg.device), self.info)
        self.runtime: Runtime = make_runtime(device, cfg.amp, cfg.amp_dtype, cfg.channels_last)
        self._set_up_task(task, network, device)
        self._set_up_optimisation(device)
        self._set_up_loaders(train_set, eval_set, collate_fn, device)
        self.checkpoints = ckpt_io.CheckpointDir(self.run_dir / CHECKPOINT_DIR, cfg.keep_last)
        self.best_miou: float | None = None
        self.last_eval: dict | None = None
        self.last_losses: dict[str, float] = {}

    # -- setup helpers ----------------------------------------------------------------------

    def _set_up_task(self, task: nn.Module, network: nn.Module | None, device: torch.device) -> None:
        """The task on its device; everything but its learnable and extra parameters frozen."""
        self.task = task
        self.network = network if network is not None else trained_network(task)
        self.extras = extra_modules(task, self.network)
        trainable = list(task.get_learnable_parameters()) + list(task.get_extra_parameters())
        self._freeze_all_but(trainable)
        task.to(device)
        if self.runtime.channels_last:
            task.to(memory_format=torch.channels_last)
        self.trainable = [p for p in trainable if p.requires_grad]

    def _set_up_optimisation(self, device: torch.device) -> None:
        """Optimizer, schedule, AMP scaler and the module one step runs (wrapped in DDP on several processes)."""
        cfg, task = self.cfg, self.task
        self.optimizer = make_optimizer(
            task.get_learnable_parameters(), task.get_extra_parameters(), name=cfg.optimizer, lr=cfg.lr,
            weight_decay=cfg.weight_decay, momentum=cfg.momentum, betas=cfg.betas,
        )
        self.scheduler = make_scheduler(self.optimizer, cfg.iters, cfg.poly_power, cfg.warmup_iters)
        self.scaler = self.runtime.grad_scaler()
        self.step_module: nn.Module = _TrainStep(task)
        if self.info.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)

    def _set_up_loaders(self, train_set: Dataset, eval_set: Dataset | None, collate_fn: Callable | None,
                        device: torch.device) -> None:
        """The resumable training loader (its order set by (seed, epoch) alone) and the eval loader, if any."""
        cfg = self.cfg
        self.sampler = ResumableSampler(train_set, self.info, shuffle=True, seed=cfg.seed)
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"train set gives {self.sampler.num_samples} samples per process, fewer than "
                             f"train.batch_size={cfg.batch_size}")
        workers = loader_workers(cfg.num_workers, self.info.world_size)
        if workers < cfg.num_workers:
            log.info("train.num_workers=%d exceeds the %d CPU core(s) here: using %d loader worker(s)",
                     cfg.num_workers, available_cpus(), workers)
        loader_args = dict(num_workers=workers, collate_fn=collate_fn, pin_memory=device.type == "cuda")
        # A private generator: creating loader iterators must not consume the global RNG, or a
        # resumed run would draw different dropout masks than an uninterrupted one.
        generator = torch.Generator().manual_seed(cfg.seed + self.info.rank)
        self.train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                                       generator=generator, persistent_workers=workers > 0, **loader_args)
        self.eval_loader = None
        if eval_set is not None:
            # Its own generator too: validating must not move the training run's random stream, so a
            # run's weights do not depend on how often it was validated.
            self.eval_loader = DataLoader(eval_set, batch_size=cfg.eval.batch_size, sampler=ShardSampler(eval_set, self.info),
                                          generator=torch.Generator().manual_seed(cfg.seed), **loader_args)

    def _freeze_all_but(self, trainable: list[nn.Parameter]) -> None:
        """Parameters the optimizer does not own (a frozen teacher) get no gradients at all."""
        keep = {id(p) for p in trainable}
        frozen = 0
        for p in self.task.parameters():
            if id(p) not in keep and p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
        if frozen:
            log.info("%d parameters outside the learnable / extra sets are frozen (e.g. the teacher)", frozen)

    def _resume_path(self) -> Path | None:
        if self.explicit_resume is not None:
            return self.explicit_resume
        return self.checkpoints.latest if self.checkpoints.latest.is_file() else None

    def _resume(self) -> tuple[int, Path | None]:
        """Restore everything from the resume checkpoint; returns (iteration, path)."""
        path = self._resume_path()
        if path is None:
            self._initialise()
            return 0, None
        ckpt = ckpt_io.load_checkpoint(path)
        ckpt_io.restore_checkpoint(
            ckpt, path, model=self.network, signature=self.signature, extra_modules=self.extras,
            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
        )
        states = ckpt.get("rng") or []
        if len(states) == self.info.world_size:
            restore_rng_state(states[self.info.rank])
        else:
            log.warning("checkpoint holds RNG states of %d processes, this run has %d: reseeding instead",
                        len(states), self.info.world_size)
            seed_everything(self.cfg.seed + self.info.rank + ckpt["iteration"])
        metrics = ckpt.get("metrics", {})
        self.best_miou = metrics.get("best_miou")
        self.last_eval = metrics.get("last_eval")
        self.last_losses = dict(metrics.get("losses", {}))
        log.info("resuming from %s at iteration %d", path, ckpt["iteration"])
        return int(ckpt["iteration"]), path

    def _initialise(self) -> None:
        """A fresh run with train.init_from starts from those weights (optimiser and schedule stay fresh)."""
        path = self.cfg.init_from
        if path is None:
            return
        try:
            ckpt_io.load_model_weights(path, self.network, self.signature)
        except ckpt_io.CheckpointError as err:
            raise ckpt_io.CheckpointError(err.path, f"train.init_from: {err.problem}") from None
        log.info("starting from the weights in %s (train.init_from)", path)

    def _batches(self, start: int) -> Iterator[Any]:
        """Endless batches, starting at iteration `start`'s place in the (seed, epoch) order."""
        epoch, position = divmod(start, self.steps_per_epoch)
        self.sampler.set_start(epoch, position * self.cfg.batch_size)
        while True:
            yield from self.train_loader
            epoch += 1
            self.sampler.set_start(epoch, 0)

    # -- one iteration ----------------------------------------------------------------------

    def _step(self, batch: dict[str, Any], iteration: int) -> dict[str, float]:
        """Forward, finiteness check, backward, update; returns this step's losses averaged over ranks."""
        progress = (iteration - 1) / self.cfg.iters
        with self.runtime.autocast():
            _, losses = self.step_module(batch["image"], batch.get("x"), batch["label"], progress)
        names = sorted(losses)
        for name in names:
            if losses[name].numel() != 1:
                raise ValueError(f"loss term {name!r} must be a scalar, got shape {tuple(losses[name].shape)}")
        # One all-reduce gives the logged mean losses and makes every rank agree on a NaN stop.
        values = torch.stack([losses[n].detach().float().reshape(()) for n in names])
        values = all_reduce_sum(values) / self.info.world_size
        values_list = values.tolist()
        for name, value in zip(names, values_list):
            if not math.isfinite(value):
                checkpoint = self.checkpoints.latest if self.checkpoints.latest.is_file() else None
                raise NonFiniteLossError(iteration, name, value, checkpoint)
        total = sum(losses[n].reshape(()) for n in names)
        self.scaler.scale(total).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        out = dict(zip(names, values_list))
        out["loss"] = sum(values_list)
        return out

    # -- evaluation and checkpoints ---------------------------------------------------------

    def evaluate(self) -> dict:
        """Score the task's forward_test on the eval set (all ranks take part)."""
        if self.eval_loader is None:
            raise ValueError("no eval_set was given to the Trainer")
        broadcast_buffers(self.task)
        self.task.eval()
        try:
            return score_loader(
                self.task.forward_test, self.eval_loader, self.num_classes, input_keys=input_keys_of(self.task),
                eval_cfg=self.cfg.eval, device=self.runtime.device, class_names=self.class_names,
                autocast=self.runtime.autocast, progress=self.cfg.progress,
            )
        finally:
            self.task.train()

    def _checkpoint(self, iteration: int) -> dict:
        return ckpt_io.build_checkpoint(
            model=self.network, signature=self.signature, iteration=iteration, extra_modules=self.extras,
            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
            rng=all_gather_objects(capture_rng_state()), config=self.run_config,
            metrics={"best_miou": self.best_miou, "last_eval": self.last_eval, "losses": self.last_losses},
        )

    def _save(self, iteration: int, latest: bool, best: bool) -> None:
        """Every rank takes part (RNG states are gathered); rank 0 writes."""
        if not (latest or best):
            return
        ckpt = self._checkpoint(iteration)
        if self.info.is_main:
            if latest:
                self.checkpoints.save(ckpt)
            if best:
                self.checkpoints.save_best(ckpt)

    def _periodic_eval(self, iteration: int, logger: RunLogger) -> bool:
        """Evaluate, log, and track the best mIoU; True when this is the best so far."""
        self.last_eval = self.evaluate()
        logger.log_eval(iteration, self.last_eval)
        miou = self.last_eval["miou"]
        is_best = not math.isnan(miou) and (self.best_miou is None or miou > self.best_miou)
        if is_best:
            self.best_miou = miou
        if self.info.is_main:
            accuracy = self.last_eval["pixel_acc"]
            tqdm.write(f"iteration {iteration}: mIoU {100 * miou:.2f}, pixel acc {100 * accuracy:.2f}")
        return is_best

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> TrainSummary:
        """Train from the start or the resume checkpoint up to cfg.iters; returns a TrainSummary."""
        cfg, main = self.cfg, self.info.is_main
        started = time.perf_counter()
        start, resumed_from = self._resume()
        if start >= cfg.iters:
            log.info("checkpoint is at iteration %d >= train.iters=%d: nothing to train", start, cfg.iters)
        logger = RunLogger(self.run_dir, enabled=main, tensorboard=cfg.tensorboard, start_iteration=start)
        bar = tqdm(total=cfg.iters, initial=start, desc="train", dynamic_ncols=True,
                   disable=not (main and cfg.progress))
        window: dict[str, float] = {}
        window_steps = 0
        speed, overall = Throughput(), Throughput()
        self.task.train()
        batches = self._batches(start)
        try:
            for iteration in range(start + 1, cfg.iters + 1):
                raw = as_batch(next(batches))
                note_worker_skips(self.train_loader.dataset, raw)  # data.on_error skip: frames a worker skipped
                batch = to_device(raw, self.runtime.device, self.runtime.channels_last)
                lr = self.optimizer.param_groups[0]["lr"]
                losses = self._step(batch, iteration)
                images = batch_size_of(batch) * self.info.world_size
                speed.add(images)
                overall.add(images)
                for key, value in losses.items():
                    window[key] = window.get(key, 0.0) + value
                window_steps += 1
                bar.update(1)
                last = iteration == cfg.iters
                if iteration % cfg.log_every == 0 or last:
                    self.last_losses = {k: v / window_steps for k, v in window.items()}
                    rate = speed.rate()
                    logger.log_train(iteration, {"lr": lr, **self.last_losses, "img_s": rate})
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in self.last_losses.items()}, "img/s": f"{rate:.1f}"})
                    window, window_steps = {}, 0
                is_best = False
                if self.eval_loader is not None and ((cfg.eval_every and iteration % cfg.eval_every == 0) or last):
                    is_best = self._periodic_eval(iteration, logger)
                    speed.rate()  # restart the throughput window: evaluation time is not training speed
                self._save(iteration, latest=bool(cfg.ckpt_every and iteration % cfg.ckpt_every == 0) or last,
                           best=is_best)
        finally:
            bar.close()
            logger.close()
        broadcast_buffers(self.task)  # every rank ends with rank 0's model, the one checkpointed
        barrier()
        done = max(start, cfg.iters)
        return TrainSummary(
            start_iteration=start, iterations=done, iterations_run=done - start,
            wall_time_s=time.perf_counter() - started, final_losses=dict(self.last_losses),
            last_eval=self.last_eval, best_miou=self.best_miou,
            checkpoint=self.checkpoints.latest if self.checkpoints.latest.is_file() else None,
            resumed_from=resumed_from, images_per_s=overall.rate() if done > start else math.nan,
        )
