"""Multi-process (DDP) plumbing: init from torchrun variables, samplers, rank-0 helpers.

Every helper also works in a plain single process (world size 1), so the trainer and
evaluation have one code path. Launch with
`python -m torch.distributed.run --nproc_per_node N -m <tool> ...`; the backend is NCCL on
CUDA and gloo on CPU.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK, if any.

    Without torchrun variables (or with WORLD_SIZE=1) nothing is initialised and the info
    says rank 0 of 1. On CUDA each process takes the GPU of its LOCAL_RANK.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world)


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device this process should use: its own GPU under DDP."""
    if device.type == "cuda" and info.world_size > 1:
        return torch.device("cuda", info.local_rank)
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_info() -> DistInfo:
    """DistInfo of the current process group (rank 0 of 1 without one)."""
    if not is_distributed():
        return DistInfo()
    return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_world_size())


def is_main_process() -> bool:
    return get_info().is_main


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place; returns it (a no-op in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last training step every rank
    holds its own running statistics; evaluation and the final model must use rank 0's.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]; [obj] in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup(finished: bool = True) -> None:
    """Leave the process group (safe to call when none was joined).

    Before it goes: a garbage collection, so that DDP reducers and gloo work objects die while the
    group and the interpreter are alive (freed during interpreter shutdown instead, gloo's threads
    can abort the process: "terminate called without an active exception"), and, when this rank
    `finished` normally, a barrier, so that no rank tears its connections down while another is
    still in a collective. A rank that failed skips the barrier: the others may never reach it.
    """
    if not is_distributed():
        return
    gc.collect()
    if finished:
        try:
            dist.barrier()
        except RuntimeError:  # a peer left early (it failed, and says why itself): nothing to wait for
            pass
    dist.destroy_process_group()


class SeededIndex(int):
    """A sample index that carries its augmentation seed (run seed, rank, epoch, position in the epoch).

    A dataset that augments (data/dataset.py) seeds a sample's augmentation from `augment_seed`
    when present, so it depends on where the sample sits in the run, not on which loader worker
    loads it or on that worker's RNG state: exact on resume at any num_workers.
    """

    augment_seed: tuple[int, ...]

    def __new__(cls, value: int, augment_seed: tuple[int, ...]):
        obj = super().__new__(cls, value)
        obj.augment_seed = tuple(int(v) for v in augment_seed)
        return obj

    def __reduce__(self):  # sent to loader workers by pickle
        return SeededIndex, (int(self), self.augment_seed)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle seeded by seed + epoch) that can start mid-epoch.

    Used with world size 1 too: the order of an epoch depends only on (seed, epoch), so a run
    resumed at iteration i sees exactly the samples an uninterrupted run would. Each index is a
    SeededIndex whose augmentation seed is (seed, rank, epoch, position): the augmentation a run
    resumed at iteration i draws is the uninterrupted run's too, at any num_workers.
    """

    def __init__(self, dataset: Dataset, info: DistInfo, shuffle: bool, seed: int):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.skip = 0

    def set_start(self, epoch: int, skip: int) -> None:
        """Begin at `epoch`, leaving out its first `skip` samples of this rank (once)."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.skip = self.skip, 0
        run = (self.seed, self.rank, self.epoch)
        return iter([SeededIndex(i, (*run, position)) for position, i in enumerate(indices[start:], start)])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r takes samples r, r + W, r + 2W, ...

    DistributedSampler pads the last round by repeating samples, which would count those
    images twice in an all-reduced confusion matrix; this sampler scores every image once.
    """

    def __init__(self, dataset: Dataset, info: DistInfo | None = None):
        self.length = len(dataset)
        self.info = info or get_info()

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.info.rank, self.length, self.info.world_size))

    def __len__(self) -> int:
        return len(range(self.info.rank, self.length, self.info.world_size))
