"""Score a teacher or student checkpoint on a split of its dataset; print the table, write the metrics.

    python -m lix_train.evaluate --checkpoint runs/distill/quick-.../student.pt
    python -m lix_train.evaluate --checkpoint runs/teachers/<hash>/teacher.pt --split val --mode slide

The network is rebuilt from the checkpoint's signature (no model options needed), and the data
options come from the config stored in the checkpoint, so a run's own checkpoint evaluates on
its own data with no other flags. `--preset` / `--config` / `--section.key` change them (e.g.
`--data.root` on another machine). The metrics go to
<run folder>/eval_<model>_<split>_<mode>.json (or into --run-dir).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lix_train.cli import (
    config_yaml, experiment_parser, init_runtime, resolve_experiment, run_cli, run_dir_of_checkpoint,
)
from lix_train.data.build import build_datasets
from lix_train.engine.checkpoint import CheckpointError, load_checkpoint, restore_checkpoint
from lix_train.experiment import network_from_signature
from lix_train.heldout import score_network
from lix_train.report import format_table, write_json

log = logging.getLogger(__name__)

PROG = "python -m lix_train.evaluate"
ROLES = ("teacher", "student")
DESCRIPTION = (
    "Evaluate a teacher or student checkpoint (teacher.pt, student.pt or a run's checkpoints/*.pt) on a split "
    "of its dataset: mIoU, per-class IoU and pixel accuracy, printed as a table and written as JSON. The "
    "network comes from the checkpoint's signature; data options from the config stored in the checkpoint "
    "unless --preset / --config / --section.key options say otherwise."
)


def build_parser() -> argparse.ArgumentParser:
    parser = experiment_parser(
        PROG, DESCRIPTION, resume=False, default_preset=None,
        run_dir_help="Folder for the metrics JSON (default: the checkpoint's run folder).",
        usage_extra="--checkpoint PATH [--model {teacher,student}] [--split {train,val,test}] [--mode {whole,slide}]")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="PATH", help="Checkpoint to evaluate.")
    parser.add_argument("--model", choices=ROLES, default=None,
                        help="Expected network (default: whatever the checkpoint holds); a mismatch is an error.")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="Split to score (training frames get the evaluation transforms).")
    parser.add_argument("--mode", choices=("whole", "slide"), default=None,
                        help="Whole-image or sliding-window inference (default: the config's eval.mode).")
    return parser


def eval_file_name(role: str, split: str, mode: str) -> str:
    """The metrics file this tool writes into a run folder (the study reads val scores from it)."""
    return f"eval_{role}_{split}_{mode}.json"


def check_compatible(path: Path, signature: dict, cfg, role: str) -> None:
    """The checkpoint's class count and X channels must fit the data it is evaluated on."""
    classes = cfg.data.class_set
    if int(signature.get("num_classes", -1)) != classes.num_classes:
        raise CheckpointError(path, f"the {role} has {signature.get('num_classes')} classes, but data.dataset="
                                    f"{cfg.data.dataset!r} has {classes.num_classes} ({classes.name})")
    x_channels = signature.get("config", {}).get("x_channels")
    if role == "teacher" and x_channels != cfg.data.x_channels:
        raise CheckpointError(path, f"the teacher reads {x_channels}-channel X, but data.modality="
                                    f"{cfg.data.modality!r} has {cfg.data.x_channels}")


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    signature = ckpt["signature"]
    role = signature.get("name")
    if role not in ROLES:
        raise CheckpointError(args.checkpoint, f"holds a network named {role!r}; this tool evaluates "
                                               f"{' or '.join(ROLES)} checkpoints")
    if args.model is not None and args.model != role:
        raise CheckpointError(args.checkpoint, f"holds a {role} network, not a {args.model} (--model {args.model})")
    stored = ckpt.get("config") or None
    if stored is not None and not {"data", "teacher", "student"} <= set(stored):
        stored = None  # a checkpoint written outside the experiment tools: fall back to the preset
    if args.mode is not None:
        setattr(args, "cfg:eval.mode", args.mode)
    cfg = resolve_experiment(args, base=stored)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    check_compatible(args.checkpoint, signature, cfg, role)

    info, device = init_runtime(cfg, cfg.student.train.device)

    try:
        network = network_from_signature(signature)
    except (TypeError, ValueError) as err:
        raise CheckpointError(args.checkpoint, f"cannot rebuild the network from its signature: {err}") from None
    restore_checkpoint(ckpt, args.checkpoint, model=network, signature=signature)
    modality = cfg.data.modality if role == "teacher" else None
    started = time.perf_counter()
    dataset = build_datasets(cfg.data, modality, (args.split,))[args.split]
    train_cfg = cfg.teacher.train if role == "teacher" else cfg.student.train
    metrics = score_network(network, role, dataset, cfg.eval, device, min(train_cfg.num_workers, 2),
                            train_cfg.progress and info.is_main)
    seconds = time.perf_counter() - started
    if info.is_main:
        out_dir = args.run_dir or run_dir_of_checkpoint(args.checkpoint)
        out = out_dir / eval_file_name(role, args.split, cfg.eval.mode)
        write_json(out, {"checkpoint": str(args.checkpoint), "model": role, "split": args.split,
                         "frames": len(dataset), "dataset": cfg.data.dataset, "eval_mode": cfg.eval.mode,
                         "resolution": list(cfg.data.transforms.size), role: metrics, "wall_time_s": seconds})
        print(format_table({role: metrics}, {"evaluation": seconds},
                           title=f"{cfg.data.dataset} {args.split} split ({len(dataset)} frames), {cfg.eval.mode}-image"),
              end="")
        print(f"metrics: {out}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
