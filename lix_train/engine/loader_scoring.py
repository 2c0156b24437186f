"""Score a model on a loader: one confusion matrix, summed over batches and processes.

Under DDP each process scores its shard (use distributed.ShardSampler, which never repeats an
image) and the confusion matrices are all-reduced, so every rank returns the metrics of the
whole set, identical to a single-process run.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lix_train.data.classes import IGNORE_INDEX
from lix_train.data.skipping import note_worker_skips
from lix_train.engine.batch import as_batch, to_device
from lix_train.engine.config import EvalConfig
from lix_train.engine.distributed import all_reduce_sum, is_main_process
from lix_train.engine.inference import ModelFn, predict_logits
from lix_train.engine.metrics import confusion_matrix, summarize


@torch.no_grad()
def score_loader(
    model_fn: ModelFn,
    loader: Iterable,
    num_classes: int,
    mode: str | None = None,
    *,
    input_keys: Sequence[str] = ("image",),
    eval_cfg: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    autocast=None,
    progress: bool = False,
) -> dict:
    """Metrics dict (metrics.summarize) of `model_fn` over `loader`.

    `model_fn(*[batch[k] for k in input_keys])` returns logits or (logits, features):
    `input_keys=("image",)` for a student, `("image", "x")` for an RGB+X teacher. `mode` is
    "whole" or "slide" (default: eval_cfg.mode); window size, stride and padding come from
    `eval_cfg` (default EvalConfig()). Put the model in
    eval mode first. `autocast` is an optional context factory (Runtime.autocast).
    """
    cfg = eval_cfg or EvalConfig()
    mode = mode or cfg.mode
    device = torch.device(device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for raw in tqdm(loader, desc="eval", leave=False, disable=not (progress and is_main_process())):
        raw = as_batch(raw)
        note_worker_skips(getattr(loader, "dataset", None), raw)  # data.on_error skip: frames a worker skipped
        batch = to_device(raw, device)
        missing = [k for k in input_keys if k not in batch or batch[k] is None]
        if missing:
            raise KeyError(f"evaluate: batch has no {missing} (input_keys={tuple(input_keys)})")
        inputs = [batch[k].float() for k in input_keys]
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = predict_logits(model_fn, inputs, mode, cfg.crop_size, cfg.stride, cfg.size_divisor)
        target = batch["label"]
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        confusion += confusion_matrix(logits.argmax(1), target, num_classes, ignore_index)
    all_reduce_sum(confusion)
    return summarize(confusion, class_names)
