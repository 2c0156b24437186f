"""End to end on a tiny generated set: distill with no teacher -> trains the teacher -> distils ->
scores both on the test split -> writes the run folder; a second run reuses the teacher; the
evaluate tool reproduces the run's student score; train_teacher's output feeds distill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cli_fixtures import FRAMES, write_config
from lix_train import distill, evaluate, train_teacher
from lix_train.config import from_dict, merge, read_yaml, resolve
from lix_train.data.classes import VKITTI2
from lix_train.engine.checkpoint import load_checkpoint, load_model_weights
from lix_train.engine.logging import read_csv
from lix_train.experiment import (
    DEFAULT_PRESET, PRESETS_DIR, ExperimentConfig, network_from_signature, teacher_hash,
)
from repo_paths import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
ITERS = 3


@pytest.fixture(scope="module")
def setup(tiny_experiment):
    base, config = tiny_experiment("pipeline", ITERS)
    # LIX, not the package default: the paper's method exercises every part (both terms, the DWC)
    write_config(config, merge(read_yaml(config), {"distill": {"method": "lix"}}))
    return base, config


@pytest.fixture(scope="module")
def first_run(setup):
    base, config = setup
    run_dir = base / "run1"
    code = distill.main(["--config", str(config), "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir


def _teacher_dir(config: Path) -> Path:
    cfg = resolve(ExperimentConfig, PRESETS_DIR, DEFAULT_PRESET, config)
    return cfg.output.teachers_dir / teacher_hash(cfg)


def test_first_run_trains_the_teacher_and_writes_every_promised_file(setup, first_run):
    base, config = setup
    teacher_dir = _teacher_dir(config)
    for name in ("teacher.pt", "teacher.json", "config.yaml", "train.csv", "checkpoints/latest.pt"):
        assert (teacher_dir / name).is_file(), name
    assert [int(r["iteration"]) for r in read_csv(teacher_dir / "train.csv")] == list(range(1, ITERS + 1))

    for name in ("config.yaml", "student.pt", "metrics.json", "summary.txt", "train.csv", "eval.csv",
                 "checkpoints/latest.pt"):
        assert (first_run / name).is_file(), name
    assert list((first_run / "tensorboard").glob("events.*"))
    for plot in ("loss_curves", "teacher_loss_curves", "per_class_iou", "qualitative"):
        assert (first_run / "plots" / f"{plot}.png").read_bytes()[:8] == PNG, plot

    metrics = json.loads((first_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["method"] == "lix"
    assert metrics["test_frames"] == FRAMES and metrics["test_scenes"] == ["Scene03"]
    for role in ("teacher", "student"):
        m = metrics[role]
        assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["pixel_acc"] <= 1.0
        assert list(m["per_class_iou"]) == list(VKITTI2.names)
        assert all(v is None or 0.0 <= v <= 1.0 for v in m["per_class_iou"].values())
        assert m["num_pixels"] > 0
    assert metrics["teacher"]["trained_in_this_run"] is True
    assert metrics["teacher"]["checkpoint"] == str(teacher_dir / "teacher.pt")
    assert metrics["student"]["iterations"] == ITERS
    assert metrics["wall_time_s"]["total"] > 0
    assert metrics["environment"]["torch"] == torch.__version__ and metrics["environment"]["label"]

    # the resolved config round-trips, and student.pt rebuilds and loads from its signature alone
    assert from_dict(ExperimentConfig, read_yaml(first_run / "config.yaml")).student.train.iters == ITERS
    ckpt = load_checkpoint(first_run / "student.pt")
    assert ckpt["signature"]["name"] == "student" and ckpt["signature"]["num_classes"] == 14
    assert "optimizer" not in ckpt
    student = network_from_signature(ckpt["signature"])
    load_model_weights(first_run / "student.pt", student, ckpt["signature"])
    with torch.no_grad():
        logits, _ = student.eval()(torch.zeros(1, 3, 64, 192))
    assert logits.shape == (1, 14, 64, 192)

    table = (first_run / "summary.txt").read_text()
    assert "teacher IoU" in table and "student IoU" in table and "mIoU" in table and "distillation" in table


def test_second_run_reuses_the_teacher(setup, first_run, capsys):
    base, config = setup
    teacher_dir = _teacher_dir(config)
    stamp = (teacher_dir / "teacher.pt").stat().st_mtime_ns
    rows = (teacher_dir / "train.csv").read_text()
    capsys.readouterr()
    assert distill.main(["--config", str(config), "--run-dir", str(base / "run2"),
                         "--distill.method", "dkd"]) == 0
    out = capsys.readouterr()
    assert "teacher (reused)" in out.out and "reusing the teacher" in out.err
    assert "training the teacher" not in out.err
    assert (teacher_dir / "teacher.pt").stat().st_mtime_ns == stamp
    assert (teacher_dir / "train.csv").read_text() == rows
    metrics = json.loads((base / "run2" / "metrics.json").read_text())
    first = json.loads((first_run / "metrics.json").read_text())
    assert metrics["teacher"]["trained_in_this_run"] is False and metrics["method"] == "dkd"
    assert metrics["teacher"]["miou"] == first["teacher"]["miou"]  # same teacher, same test frames


def _student_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "student.pt")["model"]


def test_the_seed_alone_decides_the_student(setup, first_run):
    """Same config and seed in a fresh run: identical weights (initialisation included), however often it was
    validated; another seed differs."""
    base, config = setup
    assert distill.main(["--config", str(config), "--run-dir", str(base / "same-seed")]) == 0
    assert distill.main(["--config", str(config), "--run-dir", str(base / "other-seed"),
                         "--student.train.seed", "1"]) == 0
    # validating after every iteration must not move the run's random stream either
    assert distill.main(["--config", str(config), "--run-dir", str(base / "validated"),
                         "--student.train.eval_every", "1"]) == 0
    assert len(read_csv(base / "validated" / "eval.csv")) == ITERS
    first, same, other, validated = (_student_weights(d) for d in
                                     (first_run, base / "same-seed", base / "other-seed", base / "validated"))
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert all(torch.equal(first[k], validated[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_with_baseline_trains_the_labels_only_twin_and_reports_the_gain(setup, capsys):
    """The labels-only student of --with-baseline is exactly a standalone baseline run of the same config and seed;
    summary.txt and metrics.json score both and say the gain."""
    base, config = setup
    run_dir, alone = base / "with-baseline", base / "baseline-alone"
    assert distill.main(["--config", str(config), "--run-dir", str(run_dir), "--with-baseline"]) == 0
    assert distill.main(["--config", str(config), "--run-dir", str(alone), "--distill.method", "baseline"]) == 0
    twin, standalone = _student_weights(run_dir / "labels_only"), _student_weights(alone)
    assert all(torch.equal(twin[k], standalone[k]) for k in twin)
    assert read_yaml(run_dir / "labels_only" / "config.yaml")["distill"]["method"] == "baseline"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels_only"]["miou"] == json.loads((alone / "metrics.json").read_text())["student"]["miou"]
    gain = metrics["distillation_gain"]
    assert gain["gain"] == pytest.approx(metrics["student"]["miou"] - metrics["labels_only"]["miou"])
    assert gain["split"] == "test" and "labels_only_val" in metrics
    summary = (run_dir / "summary.txt").read_text()
    assert "labels_only IoU" in summary and "distillation gain (lix student - labels-only student" in summary
    assert f"{100 * gain['gain']:+.1f} mIoU on test" in summary
    # Continued: nothing is trained again, the same numbers come back.
    assert distill.main(["--config", str(config), "--run-dir", str(run_dir), "--with-baseline"]) == 0
    assert "labels_only student (done earlier)" in (run_dir / "summary.txt").read_text()
    again = json.loads((run_dir / "metrics.json").read_text())["distillation_gain"]
    assert again == gain


def test_bookkeeping_options_do_not_block_continuing_a_run(setup, first_run):
    """Progress bars, logging cadence, workers: how a run is carried out, not what it computes."""
    base, config = setup
    rows = (first_run / "train.csv").read_text()
    assert distill.main(["--config", str(config), "--run-dir", str(first_run), "--student.train.progress", "true",
                         "--student.train.log_every", "2", "--output.plots", "false"]) == 0
    assert (first_run / "train.csv").read_text() == rows


def test_rerunning_a_finished_run_continues_it_without_retraining(setup, first_run):
    base, config = setup
    rows = (first_run / "train.csv").read_text()
    trained_s = json.loads((first_run / "metrics.json").read_text())["student"]["train_wall_time_s"]
    assert distill.main(["--config", str(config), "--run-dir", str(first_run)]) == 0
    assert (first_run / "train.csv").read_text() == rows
    assert "distillation (done earlier)" in (first_run / "summary.txt").read_text()
    assert json.loads((first_run / "metrics.json").read_text())["student"]["train_wall_time_s"] == trained_s


def test_evaluate_reproduces_the_runs_student_score(first_run, capsys):
    assert evaluate.main(["--checkpoint", str(first_run / "student.pt")]) == 0
    assert "student IoU" in capsys.readouterr().out
    result = json.loads((first_run / "eval_student_test_whole.json").read_text())
    expected = json.loads((first_run / "metrics.json").read_text())["student"]
    assert result["frames"] == FRAMES
    assert result["student"]["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    assert result["student"]["confusion"] == expected["confusion"]


def test_train_teacher_with_score_test_false_never_builds_the_test_split(setup, first_run, monkeypatch):
    """A study that chooses settings on val (compare --tune) trains its teacher through train_teacher: with
    eval.score_test false the teacher is scored on val and the test split is never built."""
    import lix_train.data.build as build
    import lix_train.teachers as teachers

    base, config = setup
    asked, real = [], build.build_datasets
    for user in (train_teacher, teachers):  # the modules that build train_teacher's datasets
        monkeypatch.setattr(user, "build_datasets", lambda cfg, modality, splits, root, **kw: (
            asked.extend(splits), real(cfg, modality, splits, root, **kw))[1])
    run_dir = base / "teacher-val-only"
    assert train_teacher.main(["--config", str(config), "--run-dir", str(run_dir), "--eval.score_test", "false"]) == 0
    assert "test" not in asked and "val" in asked
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "val" and "val evaluation" in metrics["wall_time_s"]
    assert "val split" in (run_dir / "summary.txt").read_text()


def test_evaluate_a_teacher_on_another_split(setup, first_run, tmp_path):
    base, config = setup
    teacher = _teacher_dir(config) / "teacher.pt"
    assert evaluate.main(["--checkpoint", str(teacher), "--model", "teacher", "--split", "val",
                          "--run-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval_teacher_val_whole.json").read_text())
    assert result["split"] == "val" and 0.0 <= result["teacher"]["miou"] <= 1.0


def test_train_teacher_output_feeds_distill(setup, tmp_path):
    base, config = setup
    teacher_dir = tmp_path / "my-teacher"
    assert train_teacher.main(["--config", str(config), "--run-dir", str(teacher_dir),
                               "--teacher.train.seed", "5"]) == 0
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    assert metrics["teacher"]["trained_in_this_run"] is True and 0.0 <= metrics["teacher"]["miou"] <= 1.0
    assert (teacher_dir / "plots" / "per_class_iou.png").read_bytes()[:8] == PNG
    run_dir = tmp_path / "run"
    assert distill.main(["--config", str(config), "--run-dir", str(run_dir), "--teacher-checkpoint",
                         str(teacher_dir / "teacher.pt"), "--distill.method", "kd", "--output.plots", "false"]) == 0
    student = json.loads((run_dir / "metrics.json").read_text())
    assert student["teacher"]["checkpoint"] == str(teacher_dir / "teacher.pt")
    assert student["teacher"]["miou"] == pytest.approx(metrics["teacher"]["miou"], abs=1e-9)


def test_an_interrupted_teacher_is_resumed(setup, tmp_path, monkeypatch):
    """Stop the teacher after 2 of 4 iterations; the next distill resumes it from iteration 2."""
    from lix_train.engine import trainer as trainer_module

    base, config = setup
    args = ["--config", str(config), "--teacher.train.iters", "4", "--output.teachers_dir", str(tmp_path / "t"),
            "--output.plots", "false"]
    real_step = trainer_module.Trainer._step

    def interrupted(self, batch, iteration):
        if iteration == 3:
            raise KeyboardInterrupt
        return real_step(self, batch, iteration)

    monkeypatch.setattr(trainer_module.Trainer, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill.main(args + ["--run-dir", str(tmp_path / "run")])
    (teacher_dir,) = (tmp_path / "t").iterdir()
    assert not (teacher_dir / "teacher.pt").exists()
    assert load_checkpoint(teacher_dir / "checkpoints" / "latest.pt")["iteration"] == 2

    monkeypatch.setattr(trainer_module.Trainer, "_step", real_step)
    assert distill.main(args + ["--run-dir", str(tmp_path / "run")]) == 0
    record = json.loads((teacher_dir / "teacher.json").read_text())
    assert record["resumed_from"] == str(teacher_dir / "checkpoints" / "latest.pt")
    assert record["iterations"] == 4
    assert [int(r["iteration"]) for r in read_csv(teacher_dir / "train.csv")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_process_torchrun_distill(setup, tmp_path):
    """torchrun, 2 CPU processes on gloo: one teacher, one run folder, one printed table (rank 0)."""
    import os
    import subprocess

    base, config = setup
    # PYTHONFAULTHANDLER: a rank that aborts in C++ (SIGABRT) prints every thread's Python stack
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "lix_train.distill", "--config", str(config), "--run-dir", str(tmp_path / "run"),
           "--output.teachers_dir", str(tmp_path / "teachers"), "--teacher.train.batch_size", "1",
           "--student.train.batch_size", "1"]  # 3 training frames: one per process and step
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stderr if len(result.stderr) < 12000
                                    else result.stderr[:4000] + "\n[...]\n" + result.stderr[-8000:])
    assert result.stdout.count("student IoU") == 1 and result.stdout.count("run folder:") == 1
    assert result.stderr.count("training the teacher") == 1  # rank 0 logs; other ranks only warn
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"]["trained_in_this_run"] is True
    assert 0.0 <= metrics["student"]["miou"] <= 1.0
    (teacher_dir,) = (tmp_path / "teachers").iterdir()
    assert [int(r["iteration"]) for r in read_csv(teacher_dir / "train.csv")] == list(range(1, ITERS + 1))
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "run" / "train.csv")] == list(range(1, ITERS + 1))


def test_a_run_folder_in_use_is_refused_at_once(setup, first_run, capsys):
    """Two trainings in one folder would interleave checkpoints: the second is refused, nothing is touched."""
    from lix_train.distill import run_lock_path
    from lix_train.locking import sole_user

    base, config = setup
    rows = (first_run / "train.csv").read_text()
    capsys.readouterr()
    with sole_user(run_lock_path(first_run), "test holder"):
        assert distill.main(["--config", str(config), "--run-dir", str(first_run)]) == 2
    err = capsys.readouterr().err
    assert f"run folder {first_run} is in use by another process" in err and len(err.strip().splitlines()) == 1
    assert (first_run / "train.csv").read_text() == rows
    assert distill.main(["--config", str(config), "--run-dir", str(first_run)]) == 0  # released: continues as usual


def test_diagnose_reads_a_finished_run(setup, first_run, capsys):
    from lix_train import diagnose

    capsys.readouterr()
    assert diagnose.main(["--run-dir", str(first_run), "--frames", "2", "--bandwidths", "1,0.1"]) == 0
    said = capsys.readouterr().out
    assert "teacher only" in said and "ARFD stage" in said
    report = json.loads((first_run / "diagnosis.json").read_text())
    assert report["frames"] == 2 and report["split"] == "val"
    assert sum(g["pixels"] for g in report["logits"].values()) == pytest.approx(1.0)
    shares = [g["dkd_share"] for g in report["logits"].values() if g["dkd_share"] is not None]
    assert sum(shares) == pytest.approx(1.0)
    for row in report["features"]:
        wide, sharp = (b["effective_channels"] for b in row["bandwidths"])
        assert 1.0 <= sharp <= wide + 1e-4 <= row["student_channels"] + 1e-4  # a sharper kernel averages fewer
        assert 0.0 <= row["cka_raw"] <= 1.0 + 1e-6
    # where the gradient goes: CE against itself is the reference, every term has a norm and a cosine
    grads = report["gradients"]
    assert grads["loss_h"]["ratio_to_ce"] == pytest.approx(1.0) and grads["loss_h"]["cosine_with_ce"] == pytest.approx(1.0)
    assert all(g["grad_norm"] >= 0 and -1 - 1e-6 <= g["cosine_with_ce"] <= 1 + 1e-6 for g in grads.values())
    assert "cosine with CE" in said


def test_diagnose_compares_several_runs_in_one_table(setup, first_run, tmp_path, capsys):
    from lix_train import diagnose

    base, config = setup
    kd_run = tmp_path / "kd"
    assert distill.main(["--config", str(config), "--run-dir", str(kd_run), "--distill.method", "kd",
                         "--output.plots", "false"]) == 0
    capsys.readouterr()
    table = tmp_path / "gradients.md"
    assert diagnose.main(["--run-dir", str(first_run), str(kd_run), "--frames", "2", "--table", str(table)]) == 0
    said = capsys.readouterr().out
    reports = [json.loads((run / "diagnosis.json").read_text()) for run in (first_run, kd_run)]
    terms, rows = diagnose.comparison_rows(reports)
    assert terms == ["loss_f", "loss_l"] and [r["method"] for r in rows] == ["lix", "kd"]
    assert rows[1]["terms"]["loss_f"] is None  # KD has no feature term
    assert rows[0]["terms"]["loss_l"] == (reports[0]["gradients"]["loss_l"]["ratio_to_ce"],
                                          reports[0]["gradients"]["loss_l"]["cosine_with_ce"])
    text = table.read_text()
    assert text.startswith(f"Command: `python -m lix_train.diagnose --run-dir {first_run} {kd_run} --split val")
    assert text.split("\n", 2)[2] in said  # the printed table is the written one (less its command)
    share = 100 * reports[1]["logits"]["teacher only"]["pixels"]
    assert f"| kd | kd | {share:.1f} % | - | - |" in text


@pytest.mark.parametrize("extra, message", [
    (["--bandwidths", "1,x"], "expected comma-separated numbers"),
    (["--bandwidths", "0"], "each > 0"),
    (["--frames", "0"], "at least one"),
])
def test_diagnose_bad_requests_end_in_one_line(first_run, capsys, extra, message):
    from lix_train import diagnose

    capsys.readouterr()
    assert diagnose.main(["--run-dir", str(first_run), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_diagnose_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    from lix_train import diagnose

    assert diagnose.main(["--run-dir", str(tmp_path)]) == 2
    assert f"--run-dir {tmp_path}: no config.yaml" in capsys.readouterr().err
