"""The project's main job: teacher (trained or reused) -> distillation -> test scores and report.

    python -m lix_train.distill                                   # quick preset, embedded data
    python -m lix_train.distill --preset synthetic --run-dir runs/study/lix-seed0
    python -m lix_train.distill --preset vkitti2 --data.root /data/vkitti2
    torchrun --nproc_per_node 4 -m lix_train.distill --preset vkitti2 --data.root /data/vkitti2

Steps: (1) the data (the embedded set is generated on first use); (2) the RGB+X teacher from the
shared store (runs/teachers/<hash>/: reused when complete, resumed when interrupted, trained
otherwise) or from --teacher-checkpoint; (3) the RGB-only student distilled with
`distill.method` (default cwd, chosen on val by the v2 benchmark; lix and the others by name),
validated on the val split during training, from fresh weights or from `student.train.init_from`;
(4) teacher and student scored on the held-out test split, the student on val too (with
`eval.score_test false`: both on val only, test never read, for runs that choose settings); (5) the
run folder:

    config.yaml  student.pt  metrics.json  summary.txt  train.csv  eval.csv  tensorboard/
    checkpoints/ (latest.pt for resuming, best.pt by val mIoU)
    plots/ loss_curves.png teacher_loss_curves.png per_class_iou.png qualitative.png

student.pt holds the final student weights and signature in the engine's checkpoint format
(what deployment exports from).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from lix_train.cli import (
    CONFIG_FILE, UserError, choose_run_dir, config_yaml, experiment_parser, init_runtime, prepare_run_dir,
    resolve_experiment, run_cli, shared,
)
from lix_train.config import to_dict
from lix_train.data.build import build_datasets, check_splits, resolve_root
from lix_train.data.skipping import skip_record
from lix_train.distillers import build_distiller
from lix_train.distillers.registry import BASELINE
from lix_train.engine.checkpoint import (
    CheckpointError, atomic_torch_save, build_checkpoint, check_signature, load_checkpoint, load_model_weights,
)
from lix_train.engine.trainer import Trainer
from lix_train.experiment import build_network, network_signature
from lix_train.heldout import example_predictions, score_network
from lix_train.locking import Busy, sole_user
from lix_train.report import (
    METRICS_FILE, METRICS_UNITS, SUMMARY_FILE, draw_plots, evenly_spaced_indices, format_table, git_commit,
    software_environment, write_json, write_text,
)
from lix_train.teachers import ensure_teacher, teacher_run_dir

log = logging.getLogger(__name__)

PROG = "python -m lix_train.distill"
STUDENT_FILE = "student.pt"
LABELS_ONLY = "labels_only"  # --with-baseline: the labels-only student's name, run folder and results key
DESCRIPTION = (
    "Distil an RGB+X teacher into an RGB-only student (distill.method: cwd, the benchmark's choice on val, by "
    "default; lix, the paper's method, and the others by name) and score both on "
    "the held-out test split. With no arguments: the quick preset on the embedded synthetic data (generated "
    "on first use), about 10 minutes on 2 CPU cores. The teacher comes from the shared teachers folder "
    "(reused when complete, resumed when interrupted, trained otherwise) unless --teacher-checkpoint is given. "
    "Writes config.yaml, student.pt, metrics.json, summary.txt, logs and plots into the run folder."
)


def build_parser() -> argparse.ArgumentParser:
    parser = experiment_parser(
        PROG, DESCRIPTION,
        run_dir_help="Run folder (default: output.runs_dir/<output.name or preset-date-time>). A folder holding a "
                     "run with the same config continues it; a different config needs --resume.",
        usage_extra="[--teacher-checkpoint PATH] [--with-baseline]")
    parser.add_argument("--teacher-checkpoint", type=Path, default=None, metavar="PATH",
                        help="Use this teacher (a teacher.pt or a teacher run's checkpoint) instead of the shared "
                             "store; it must match the teacher.model config and the data's classes.")
    parser.add_argument("--with-baseline", action="store_true",
                        help="Also train the labels-only student (distill.method baseline: the same network, data, "
                             f"schedule and seed, no distillation terms) in RUN_DIR/{LABELS_ONLY}/ and report the "
                             "distilled student's gain over it: summary.txt and metrics.json score both, with the "
                             "share of the teacher gap closed. One more student training (the cheapest kind).")
    return parser


def load_teacher(cfg, path: Path):
    """The teacher network with weights from `path`, checked against the configured architecture."""
    if not Path(path).is_file():
        raise CheckpointError(path, "teacher checkpoint not found")
    teacher = build_network("teacher", cfg.teacher.model)
    load_model_weights(path, teacher, network_signature("teacher", cfg.teacher.model))
    return teacher


def run(args: argparse.Namespace) -> int:
    cfg = resolve_experiment(args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    if args.teacher_checkpoint is not None and not args.teacher_checkpoint.is_file():
        raise CheckpointError(args.teacher_checkpoint, "teacher checkpoint not found (--teacher-checkpoint)")
    requested_dir = choose_run_dir(args, cfg)
    if cfg.student.train.init_from is not None and not (requested_dir / "checkpoints" / "latest.pt").is_file():
        check_init_from(cfg)  # a run that continues from its own checkpoint no longer reads it
    started = time.perf_counter()
    info, device = init_runtime(cfg, cfg.student.train.device)

    root = resolve_root(cfg.data, progress=info.is_main)
    run_dir = Path(shared(str(requested_dir)))  # rank 0's timestamp names the folder for every rank
    try:
        with sole_user(run_lock_path(run_dir), f"run folder {run_dir}", enabled=info.is_main):
            return distill_in(run_dir, args, cfg, info, device, root, started)
    except Busy as err:
        raise UserError(str(err)) from None


def check_init_from(cfg) -> None:
    """student.train.init_from must be a checkpoint of this student network: checked before the teacher
    is trained or loaded (the trainer loads it, signature-checked again, when training starts)."""
    path = Path(cfg.student.train.init_from)
    if not path.is_file():
        raise CheckpointError(path, "student.train.init_from: checkpoint file not found")
    try:
        check_signature(load_checkpoint(path), network_signature("student", cfg.student.model), path)
    except CheckpointError as err:
        raise CheckpointError(path, f"student.train.init_from: {err.problem}") from None


def run_lock_path(run_dir: Path) -> Path:
    """Beside the folder, not in it: the folder's own contents stay what the run wrote."""
    return run_dir.parent / f".{run_dir.name}.lock"


def distill_in(run_dir: Path, args, cfg, info, device, root, started: float) -> int:
    """Teacher (reused or trained), distillation, test scores and outputs, in `run_dir` (held by this process)."""
    resume = prepare_run_dir(run_dir, cfg, args.resume, info.is_main)
    times: dict[str, float | None] = {}
    check_splits(cfg.data, read_splits(cfg), root)  # a bad test frame must stop the run before training

    # 1. the teacher
    t0 = time.perf_counter()
    teacher_dir = None
    if args.teacher_checkpoint is not None:
        teacher_path, teacher_trained, teacher_record = args.teacher_checkpoint, False, {}
    else:
        result = ensure_teacher(cfg, teacher_run_dir(cfg), root=root)
        teacher_path, teacher_trained, teacher_record = result.checkpoint, result.trained, result.record
        teacher_dir = result.run_dir
    teacher = load_teacher(cfg, teacher_path)
    times["teacher training" if teacher_trained else "teacher (reused)"] = time.perf_counter() - t0

    # 2. distillation (and with --with-baseline, the labels-only student beside it)
    t0 = time.perf_counter()
    data = build_datasets(cfg.data, cfg.data.modality, ("train",), root)
    data.update(build_datasets(cfg.data, None, ("val",), root))  # the student's validation needs no X
    student, summary = train_student(cfg, teacher, data, run_dir, resume, info)
    times["distillation" if summary.iterations_run else "distillation (done earlier)"] = time.perf_counter() - t0
    others = {}
    if getattr(args, "with_baseline", False) and cfg.distill.method != BASELINE:
        t0 = time.perf_counter()
        labels_cfg = labels_only_config(cfg)
        labels_dir = run_dir / LABELS_ONLY
        labels_resume = prepare_run_dir(labels_dir, labels_cfg, None, info.is_main)
        labels_student, labels_summary = train_student(labels_cfg, teacher, data, labels_dir, labels_resume, info)
        others[LABELS_ONLY] = labels_student
        times[f"{LABELS_ONLY} student" + ("" if labels_summary.iterations_run else " (done earlier)")] = (
            time.perf_counter() - t0)
    elif getattr(args, "with_baseline", False):
        log.info("--with-baseline: distill.method is already the labels-only baseline; nothing more to train")

    # 3. test scores (val only with eval.score_test false)
    t0 = time.perf_counter()
    results, examples, test_split = evaluate_pair(cfg, teacher, student, data["val"], root, device, info.is_main,
                                                  others)
    times["test evaluation" if cfg.eval.score_test else "val evaluation"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - started

    class_set = data["train"].class_set
    skipped = skip_record({"train": data["train"], "val": data["val"]}, {scored_split(cfg): test_split["skipped"]})
    if info.is_main:
        write_outputs(cfg, run_dir, args, results, examples, times, summary, teacher_path, teacher_trained,
                      teacher_record, teacher_dir, class_set, test_split, skipped)
    return 0


def labels_only_config(cfg):
    """The config of the labels-only twin of a distillation run: the same everything, method baseline."""
    import dataclasses

    return dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, method=BASELINE))


def train_student(cfg, teacher, data, run_dir: Path, resume, info):
    """(student, training summary): the student of `cfg` trained with cfg.distill.method in `run_dir` (resumed
    from its checkpoint there), its final weights written to run_dir/student.pt atomically (rank 0)."""

    class_set = data["train"].class_set
    student = build_network("student", cfg.student.model, seed=cfg.student.train.seed)
    signature = network_signature("student", cfg.student.model)
    try:
        distiller = build_distiller(cfg.distill, student, teacher, num_classes=class_set.num_classes,
                                    x_channels=cfg.data.x_channels)
    except ValueError as err:
        raise UserError(f"distill.method={cfg.distill.method!r}: {err}") from None
    try:
        trainer = Trainer(distiller, data["train"], cfg.student.train, run_dir, signature=signature,
                          eval_set=data["val"], class_names=class_set.names, run_config=cfg, resume=resume)
    except ValueError as err:  # e.g. fewer training frames than one batch
        raise UserError(f"student.train: {err}") from None
    summary = trainer.run()
    if info.is_main:
        atomic_torch_save(build_checkpoint(model=student, signature=signature, iteration=summary.iterations,
                                           config=to_dict(cfg), metrics={"val": summary.last_eval}),
                          run_dir / STUDENT_FILE)
    return student, summary


def read_splits(cfg) -> tuple[str, ...]:
    """The splits a run reads: train and val, and test unless eval.score_test is false."""
    return ("train", "val", "test") if cfg.eval.score_test else ("train", "val")


def evaluate_pair(cfg, teacher, student, val, root, device, is_main: bool, others=None):
    """Test metrics of teacher and student, the student's on `val`, the qualitative examples (rank 0), and what
    was scored.

    With eval.score_test false the test split is never built: teacher ("teacher_val") and student
    ("student_val") are scored on the val split, and the examples come from it. `others` (name -> RGB student,
    e.g. the labels-only one) are scored like the student: on the scored split (under `name`, or `name_val` when
    that is val) and on val.
    """
    others = others or {}
    workers = min(cfg.student.train.num_workers, 2)
    progress = cfg.student.train.progress and is_main
    if cfg.eval.score_test:
        scored = build_datasets(cfg.data, cfg.data.modality, ("test",), root)["test"]
        results = {
            "teacher": score_network(teacher, "teacher", scored, cfg.eval, device, workers, progress),
            "student": score_network(student, "student", scored, cfg.eval, device, workers, progress),
            **{name: score_network(net, "student", scored, cfg.eval, device, workers, progress)
               for name, net in others.items()},
        }
    else:  # the teacher reads X: the val split again, with it
        scored = build_datasets(cfg.data, cfg.data.modality, ("val",), root)["val"]
        results = {"teacher_val": score_network(teacher, "teacher", scored, cfg.eval, device, workers, progress)}
    # The students on the validation drives too (the set they were validated on during training):
    # studies choose settings on these, never on test.
    results["student_val"] = score_network(student, "student", val, cfg.eval, device, workers, progress)
    for name, net in others.items():
        results[f"{name}_val"] = score_network(net, "student", val, cfg.eval, device, workers, progress)
    examples = None
    if is_main and cfg.output.plots and cfg.output.qualitative_frames:
        indices = evenly_spaced_indices(len(scored), cfg.output.qualitative_frames)
        shown = {"teacher": (teacher, "teacher"), **{name: (net, "student") for name, net in others.items()},
                 "student": (student, "student")}
        examples = example_predictions(shown, scored, indices, cfg.eval, device, cfg.data.transforms.mean,
                                       cfg.data.transforms.std)
    return results, examples, split_summary(scored)


def split_summary(dataset) -> dict:
    """Frame count and drives of a split, and the frames it skipped, recorded next to the scores it produced."""
    names = list(getattr(dataset.source, "names", []))
    scenes = sorted({n.split("/")[0] for n in names if "/" in n})
    return {"frames": len(dataset), "scenes": scenes, "skipped": dict(getattr(dataset, "skipped_frames", {}))}


def student_train_time(run_dir: Path, summary) -> float | None:
    """This call's training time; for a run that was already complete, the time its metrics.json recorded."""
    if summary.iterations_run:
        return summary.wall_time_s
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        return (metrics.get("student_run") or metrics["student"])["train_wall_time_s"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def scored_split(cfg) -> str:
    """The split the final scores come from."""
    return "test" if cfg.eval.score_test else "val"


def write_outputs(cfg, run_dir: Path, args, results, examples, times, summary, teacher_path, teacher_trained,
                  teacher_record, teacher_dir, class_set, test_split: dict, skipped: dict | None = None) -> None:
    split = "test" if cfg.eval.score_test else "val"
    teacher_run = {"checkpoint": str(teacher_path), "trained_in_this_run": teacher_trained,
                   "train_wall_time_s": teacher_record.get("train_wall_time_s")}
    student_run = {"checkpoint": str(run_dir / STUDENT_FILE), "iterations": summary.iterations,
                   "train_wall_time_s": student_train_time(run_dir, summary),
                   "init_from": None if cfg.student.train.init_from is None else str(cfg.student.train.init_from)}
    metrics = {
        "units": METRICS_UNITS,
        "split": split,  # what "teacher" / "student" were scored on; val only: "teacher_val" / "student_val" alone
        f"{split}_frames": test_split["frames"],
        f"{split}_scenes": test_split["scenes"],
        "dataset": cfg.data.dataset,
        "modality": cfg.data.modality,
        "resolution": list(cfg.data.transforms.size),
        "eval_mode": cfg.eval.mode,
        "method": cfg.distill.method,
        "preset": args.preset,
        "init_from": student_run["init_from"],  # the weights the student started from (None: fresh)
    }
    if cfg.eval.score_test:
        metrics["teacher"] = {**results["teacher"], **teacher_run}
        metrics["student"] = {**results["student"], **student_run}
    else:
        metrics["teacher_val"] = {**results["teacher_val"], **teacher_run}
    labels = {k: v for k, v in results.items() if k.startswith(LABELS_ONLY)}
    if labels:  # --with-baseline: the labels-only student, scored like the student, and the gain over it
        metrics.update(labels)
        metrics[LABELS_ONLY + "_run"] = {"checkpoint": str(run_dir / LABELS_ONLY / STUDENT_FILE),
                                         "run_dir": str(run_dir / LABELS_ONLY)}
        metrics["distillation_gain"] = distillation_gain(results, split)
    metrics.update({
        "student_val": results["student_val"],  # validation split (max_val_frames applies): for choosing settings
        "teacher_run": teacher_run,
        "student_run": student_run,
        "wall_time_s": times,
        # data.on_error skip: per split, the frames left out or replaced (name -> error), in this process
        "skipped_frames": skipped or {},
        "config": CONFIG_FILE,
        "commit": git_commit(),  # the code this run trained and scored with
        "environment": software_environment(),  # ... and the libraries / CPU kernels
    })
    write_json(run_dir / METRICS_FILE, metrics)
    title = (f"{cfg.data.dataset} {split} split, {cfg.data.modality} teacher -> RGB student ({cfg.distill.method}), "
             f"{cfg.data.transforms.size[0]}x{cfg.data.transforms.size[1]}, {cfg.eval.mode}-image")
    table = format_table(results, times, title=title)
    if labels:
        table += gain_lines(metrics["distillation_gain"], cfg.distill.method)
    write_text(run_dir / SUMMARY_FILE, table)
    if cfg.output.plots:
        draw_plots(run_dir, results, examples=examples, class_set=class_set,
                   extra_curves={"teacher": teacher_dir} if teacher_dir is not None else None, split=split,
                   title=f"student loss curves ({cfg.distill.method})")
    print(table, end="", flush=True)
    print(f"run folder: {run_dir}", flush=True)


def distillation_gain(results, split: str) -> dict:
    """The distilled student against the labels-only one on the scored split (and on val): mIoU points (fractions
    like the scores) and the share of the teacher-baseline gap closed, (student - labels-only) / (teacher -
    labels-only); None where the teacher is not above the labels-only student."""
    suffix = "" if split == "test" else "_val"
    teacher = results["teacher" + suffix]["miou"]
    student, labels = results["student" + suffix]["miou"], results[LABELS_ONLY + suffix]["miou"]
    gap = teacher - labels
    return {"split": split, "teacher": teacher, "student": student, LABELS_ONLY: labels,
            "gain": student - labels, "gap_share": (student - labels) / gap if gap > 0 else None,
            "gain_val": results["student_val"]["miou"] - results[LABELS_ONLY + "_val"]["miou"]}


def gain_lines(gain: dict, method: str) -> str:
    """The summary's last lines: what distillation added over training on the labels alone."""
    share = "" if gain["gap_share"] is None else f", {100 * gain['gap_share']:.0f} % of the teacher's lead closed"
    return (f"\ndistillation gain ({method} student - labels-only student, same network, data, schedule and seed): "
            f"{100 * gain['gain']:+.1f} mIoU on {gain['split']}{share}; {100 * gain['gain_val']:+.1f} on val. "
            "One seed: differences under about 1.5 points are noise (docs/results.md).\n")


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
