"""A tiny generated synthetic dataset and a matching tiny experiment config for CLI tests.

Three drives (one per split) of a few 80x240 frames, trained at 64x192, so X is computed at the
stored resolution and the transforms downscale, as in the quick preset. Networks are the
quick preset's layout at the smallest width; every run is a handful of iterations.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lix_train.data.synthetic import SyntheticConfig, write_dataset

SCENES = {"train": "Scene01", "val": "Scene02", "test": "Scene03"}
FRAMES = 3
HEIGHT, WIDTH = 80, 240
TRAIN_SIZE = [64, 192]


def write_tiny_synthetic(root: Path) -> Path:
    """Three 3-frame drives at 80x240, one variation (about a second to render)."""
    write_dataset(root, SyntheticConfig(scenes=3, frames=FRAMES, height=HEIGHT, width=WIDTH, seed=3), workers=1,
                  progress=False)
    return root


def tiny_train(iters: int = 3) -> dict:
    return {"iters": iters, "batch_size": 2, "lr": 0.003, "warmup_iters": 1, "eval_every": 0, "ckpt_every": 1,
            "log_every": 1, "num_workers": 0, "progress": False, "tensorboard": True, "device": "cpu"}


def tiny_config(data_root: Path, out: Path, iters: int = 3) -> dict:
    """Options over the quick preset: tiny data, tiny networks, a few iterations, folders under `out`."""
    model = {"encoder": "resnet18", "width": 0.125, "decoder_channels": 16}
    return {
        "data": {"root": str(data_root), "train_scenes": [SCENES["train"]], "val_scenes": [SCENES["val"]],
                 "test_scenes": [SCENES["test"]], "max_val_frames": 0,
                 "transforms": {"size": TRAIN_SIZE, "crop_size": TRAIN_SIZE}},
        "teacher": {"model": model, "train": tiny_train(iters)},
        "student": {"model": model, "train": tiny_train(iters)},
        "output": {"teachers_dir": str(out / "teachers"), "runs_dir": str(out / "runs"), "qualitative_frames": 2},
    }


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
