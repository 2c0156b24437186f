"""Train (or reuse) the RGB+X teacher alone, and score it on the held-out test split (on val with
eval.score_test false: then the test split is never built, as in a study that chooses settings).

    python -m lix_train.train_teacher                              # quick preset, shared store
    python -m lix_train.train_teacher --preset vkitti2 --data.root /data/vkitti2
    python -m lix_train.train_teacher --run-dir runs/my-teacher    # a folder of your own

Without --run-dir the teacher goes to the shared store output.teachers_dir/<hash>/, where
`python -m lix_train.distill` with the same data, teacher.model and teacher.train finds and
reuses it. With --run-dir, hand the result to distill with --teacher-checkpoint DIR/teacher.pt.
The folder gets teacher.pt, teacher.json, config.yaml, the engine's logs and checkpoints, and
metrics.json / summary.txt / plots/ of the test score.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lix_train.cli import (
    UserError, config_yaml, experiment_parser, init_runtime, prepare_run_dir, resolve_experiment, run_cli, shared,
)
from lix_train.data.build import build_datasets, check_splits, resolve_root
from lix_train.distill import load_teacher, read_splits, scored_split
from lix_train.heldout import score_network
from lix_train.report import (
    METRICS_FILE, METRICS_UNITS, SUMMARY_FILE, draw_plots, format_table, git_commit, write_json, write_text,
)
from lix_train.teachers import ensure_teacher, teacher_run_dir

PROG = "python -m lix_train.train_teacher"
DESCRIPTION = (
    "Train the RGB+X teacher of an experiment (or reuse it when its folder already holds a complete "
    "teacher.pt), then score it on the held-out test split. The default folder is the shared teachers store "
    "that python -m lix_train.distill reads, keyed by a hash of the data, teacher.model and teacher.train "
    "options. Only the data, teacher and eval options matter here."
)


def build_parser() -> argparse.ArgumentParser:
    return experiment_parser(
        PROG, DESCRIPTION,
        run_dir_help="Teacher folder (default: output.teachers_dir/<hash of data, teacher.model, teacher.train>).")


def run(args: argparse.Namespace) -> int:
    cfg = resolve_experiment(args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    started = time.perf_counter()
    info, device = init_runtime(cfg, cfg.teacher.train.device)

    root = resolve_root(cfg.data, progress=info.is_main)
    run_dir = Path(shared(str(args.run_dir or teacher_run_dir(cfg))))
    if args.run_dir is not None:
        resume = prepare_run_dir(run_dir, cfg, args.resume, info.is_main) or args.resume
    else:  # a store folder is named by the teacher's hash: its config always matches the teacher's part
        resume = Path(args.resume) if isinstance(args.resume, str) else args.resume
        if isinstance(resume, Path) and not resume.is_file():
            raise UserError(f"--resume {resume}: checkpoint file not found")
    check_splits(cfg.data, read_splits(cfg), root)  # a bad test frame must stop it before training
    result = ensure_teacher(cfg, run_dir, root=root, resume=resume)
    teacher = load_teacher(cfg, result.checkpoint)
    trained_s = time.perf_counter() - started

    t0 = time.perf_counter()
    split = scored_split(cfg)  # eval.score_test false: val only, the test split is never built
    scored = build_datasets(cfg.data, cfg.data.modality, (split,), root)[split]
    metrics = score_network(teacher, "teacher", scored, cfg.eval, device, min(cfg.teacher.train.num_workers, 2),
                            cfg.teacher.train.progress and info.is_main)
    if info.is_main:
        times = {"teacher training" if result.trained else "teacher (reused)": trained_s,
                 f"{split} evaluation": time.perf_counter() - t0, "total": time.perf_counter() - started}
        write_json(run_dir / METRICS_FILE, {
            "units": METRICS_UNITS, "split": split, "dataset": cfg.data.dataset, "modality": cfg.data.modality,
            "resolution": list(cfg.data.transforms.size), "eval_mode": cfg.eval.mode,
            "teacher": {**metrics, "checkpoint": str(result.checkpoint), "trained_in_this_run": result.trained,
                        "train_wall_time_s": result.train_wall_time_s},
            "wall_time_s": times,
            "commit": git_commit(),  # the code that scored it (teacher.json names the code that trained it)
        })
        table = format_table({"teacher": metrics}, times,
                             title=f"{cfg.data.dataset} {split} split, RGB+{cfg.data.modality} teacher")
        write_text(run_dir / SUMMARY_FILE, table)
        if cfg.output.plots:
            draw_plots(run_dir, {"teacher": metrics}, split=split)
        print(table, end="")
        print(f"teacher: {result.checkpoint}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
