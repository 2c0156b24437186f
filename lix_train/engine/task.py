"""What the trainer trains: the Distiller protocol, and an adapter for plain supervised training.

The trainer knows one interface, the mdistiller-style Distiller:

    forward_train(image, x, target, progress) -> (logits, {"loss_h": ..., "loss_l": ..., ...})
    forward_test(*inputs) -> logits
    get_learnable_parameters() / get_extra_parameters()

The total loss is the sum of the dict's terms (a distiller weights them itself), and every term
is logged by name. Training a teacher or an RGB-only baseline uses SupervisedTask, which gives a
bare network the same interface with L_H as its only loss.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from lix_train.data.classes import IGNORE_INDEX
from lix_train.engine.inference import logits_of
from lix_train.losses.ce import pixel_cross_entropy

LossDict = dict[str, torch.Tensor]


@runtime_checkable
class TrainTask(Protocol):
    """Anything the Trainer can optimise (a Distiller or a SupervisedTask)."""

    def forward_train(self, image: torch.Tensor, x: torch.Tensor | None, target: torch.Tensor,
                      progress: float) -> tuple[torch.Tensor, LossDict]: ...

    def forward_test(self, *inputs: torch.Tensor) -> torch.Tensor: ...

    def get_learnable_parameters(self) -> list[nn.Parameter]: ...

    def get_extra_parameters(self) -> list[nn.Parameter]: ...


class SupervisedTask(nn.Module):
    """A network trained on labels alone: cross-entropy with ignore_index, logged as "loss_h".

    `input_keys` names the batch entries the network takes: ("image",) for an RGB network,
    ("image", "x") for an RGB+X teacher.
    """

    def __init__(self, network: nn.Module, input_keys: Sequence[str] = ("image",),
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if tuple(input_keys) not in (("image",), ("image", "x")):
            raise ValueError(f"input_keys={tuple(input_keys)!r}: expected ('image',) or ('image', 'x')")
        self.network = network
        self.input_keys = tuple(input_keys)
        self.ignore_index = ignore_index

    def forward_train(self, image: torch.Tensor, x: torch.Tensor | None, target: torch.Tensor,
                      progress: float) -> tuple[torch.Tensor, LossDict]:
        if "x" in self.input_keys and x is None:
            raise ValueError("this network takes (image, x) but the batch has no 'x'")
        inputs = (image,) if self.input_keys == ("image",) else (image, x)
        logits = logits_of(self.network(*inputs))
        return logits, {"loss_h": pixel_cross_entropy(logits, target, self.ignore_index)}

    def forward_test(self, *inputs: torch.Tensor) -> torch.Tensor:
        return logits_of(self.network(*inputs))

    def get_learnable_parameters(self) -> list[nn.Parameter]:
        return list(self.network.parameters())

    def get_extra_parameters(self) -> list[nn.Parameter]:
        return []


def trained_network(task: nn.Module) -> nn.Module:
    """The network whose weights are the product: a distiller's student, a SupervisedTask's network."""
    for name in ("student", "network"):
        module = getattr(task, name, None)
        if isinstance(module, nn.Module):
            return module
    return task


def extra_modules(task: nn.Module, network: nn.Module) -> dict[str, nn.Module]:
    """Direct children of `task` (other than `network`) owning any of its extra parameters (e.g. the DWC)."""
    extra_ids = {id(p) for p in task.get_extra_parameters()}
    if not extra_ids:
        return {}
    modules = {
        name: child for name, child in task.named_children()
        if child is not network and any(id(p) in extra_ids for p in child.parameters())
    }
    covered = {id(p) for child in modules.values() for p in child.parameters()}
    if not extra_ids <= covered:
        raise ValueError("get_extra_parameters() returns parameters that are not inside a child module of the "
                         "task; put extra trainable parts in a submodule so checkpoints can store them")
    return modules


def input_keys_of(task: nn.Module) -> tuple[str, ...]:
    """Batch entries forward_test takes: ("image",) unless the task says otherwise."""
    return tuple(getattr(task, "input_keys", ("image",)))
