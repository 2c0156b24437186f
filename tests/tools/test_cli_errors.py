"""Bad input to the entry points: one line on stderr naming the problem, exit status 2, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data_trees import write_kitti_semantics_tree
from lix_train import distill, evaluate, train_teacher
from lix_train.engine.checkpoint import atomic_torch_save, build_checkpoint, load_checkpoint
from lix_train.experiment import network_signature
from lix_train.models import ModelConfig, create_model
from repo_paths import ROOT


@pytest.fixture(scope="module")
def tiny(tiny_experiment):
    return tiny_experiment("errors")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    line = err[-1]
    assert "Traceback" not in "\n".join(err)
    return line


def _fake_checkpoint(path: Path, role: str, **model) -> Path:
    """An untrained network's weights under its signature, in the engine's checkpoint format."""
    cfg = ModelConfig(**model)
    net = create_model(role, **{k: v for k, v in cfg.kwargs_for(role).items() if k != "pretrained"})
    return atomic_torch_save(build_checkpoint(model=net, signature=network_signature(role, cfg), iteration=0), path)


def test_unknown_preset_exits_2_with_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "lix_train.distill", "--preset", "fast", "--run-dir", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unknown preset 'fast'" in result.stderr and "quick" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing was written


def test_unknown_option_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill.main(["--student.train.iterations", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--student.train.iterations" in err


def test_unknown_option_in_a_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  methd: kd\n")
    assert train_teacher.main(["--config", str(bad)]) == 2
    line = _error_line(capsys)
    assert "methd" in line and "method" in line


def test_bad_value_names_the_option(capsys):
    assert distill.main(["--distill.method", "magic", "--print-config"]) == 2
    assert "distill.method='magic'" in _error_line(capsys)


def test_missing_teacher_checkpoint(tiny, tmp_path, capsys):
    base, config = tiny
    missing = tmp_path / "nope.pt"
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "run"),
                         "--teacher-checkpoint", str(missing)]) == 2
    line = _error_line(capsys)
    assert str(missing) in line and "teacher checkpoint not found" in line
    assert not (tmp_path / "run").exists()


def test_teacher_checkpoint_of_another_architecture(tiny, tmp_path, capsys):
    base, config = tiny
    wide = _fake_checkpoint(tmp_path / "wide.pt", "teacher", width=0.25, decoder_channels=16)
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "run"),
                         "--teacher-checkpoint", str(wide)]) == 2
    line = _error_line(capsys)
    assert str(wide) in line and "architecture / class-count mismatch" in line and "config.width" in line


def test_evaluate_a_checkpoint_with_another_class_count(tiny, tmp_path, capsys):
    base, config = tiny
    city = _fake_checkpoint(tmp_path / "city.pt", "student", width=0.125, decoder_channels=16, num_classes=19)
    assert evaluate.main(["--checkpoint", str(city), "--config", str(config)]) == 2
    line = _error_line(capsys)
    assert "19 classes" in line and "14" in line and str(city) in line


def test_evaluate_refuses_the_wrong_model_kind(tiny, tmp_path, capsys):
    base, config = tiny
    student = _fake_checkpoint(tmp_path / "s.pt", "student", width=0.125, decoder_channels=16)
    assert evaluate.main(["--checkpoint", str(student), "--config", str(config), "--model", "teacher"]) == 2
    assert "holds a student network, not a teacher" in _error_line(capsys)


def test_evaluate_a_missing_or_foreign_file(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint file not found" in _error_line(capsys)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert evaluate.main(["--checkpoint", str(junk)]) == 2
    assert "not a readable LIX-Seg checkpoint" in _error_line(capsys)


def test_teacher_training_on_data_without_x(tmp_path, capsys):
    root = tmp_path / "data_semantics"
    write_kitti_semantics_tree(root, stems=tuple(f"{i:06d}_10" for i in range(4)))
    argv = ["--data.dataset", "kitti_semantics", "--data.root", str(root), "--teacher.model.num_classes", "19",
            "--student.model.num_classes", "19", "--data.kitti.val_frames", "1", "--data.kitti.test_frames", "1",
            "--run-dir", str(tmp_path / "teacher")]
    assert train_teacher.main(argv) == 2
    line = _error_line(capsys)
    assert "teacher training needs X" in line and "data.kitti.stereo_root" in line
    assert not (tmp_path / "teacher" / "teacher.pt").exists()


def test_gpu_preset_without_its_data_root(tmp_path, capsys):
    assert distill.main(["--preset", "vkitti2", "--run-dir", str(tmp_path / "run"),
                         "--student.train.device", "cpu", "--teacher.train.device", "cpu"]) == 2
    assert "data.root is required for data.dataset='vkitti2'" in _error_line(capsys)


def test_missing_data_root_names_the_folder(tmp_path, capsys):
    missing = tmp_path / "vkitti2"
    assert train_teacher.main(["--preset", "vkitti2", "--data.root", str(missing), "--teacher.train.device", "cpu",
                               "--student.train.device", "cpu", "--run-dir", str(tmp_path / "t")]) == 2
    assert str(missing) in _error_line(capsys)


def test_existing_run_with_another_config_needs_resume(tiny, tmp_path, capsys):
    base, config = tiny
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("student: {train: {iters: 999}}\n")
    (run_dir / "student.pt").write_bytes(b"")  # a finished run (a folder with nothing trained is reused)
    assert distill.main(["--config", str(config), "--run-dir", str(run_dir)]) == 2
    assert "already holds a run with a different config" in _error_line(capsys)
    assert distill.main(["--config", str(config), "--run-dir", str(run_dir), "--resume"]) == 2
    assert "--resume: no checkpoint to continue" in _error_line(capsys)


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    """The third teacher step's loss is NaN: exit 2 with the engine's message; latest.pt stays at step 2."""
    import torch

    from lix_train.engine import task as task_module

    base, config = tiny
    real_ce = task_module.pixel_cross_entropy
    calls = {"n": 0}

    def nan_on_third_call(*args, **kwargs):
        calls["n"] += 1
        loss = real_ce(*args, **kwargs)
        return loss * torch.nan if calls["n"] == 3 else loss

    monkeypatch.setattr(task_module, "pixel_cross_entropy", nan_on_third_call)
    teachers = tmp_path / "teachers"
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "run"),
                         "--output.teachers_dir", str(teachers)]) == 2
    line = _error_line(capsys)
    assert "loss term 'loss_h' is nan at iteration 3" in line and "Lower train.lr" in line
    (teacher_dir,) = teachers.iterdir()
    assert "latest.pt" in line
    assert load_checkpoint(teacher_dir / "checkpoints" / "latest.pt")["iteration"] == 2
    assert not (teacher_dir / "teacher.pt").exists()


def test_resume_without_a_run(capsys):
    assert distill.main(["--resume"]) == 2
    assert "--resume without a PATH continues the run in --run-dir" in _error_line(capsys)


@pytest.mark.parametrize("tool", ["distill", "compare"])
def test_abbreviated_option_is_refused_not_prefix_matched(tool, capsys):
    """`--student.train.iter 50` must not silently set `iters` (argparse's allow_abbrev)."""
    from lix_train import compare

    main = {"distill": distill.main, "compare": compare.main}[tool]
    with pytest.raises(SystemExit) as exit_info:
        main(["--student.train.iter", "50", "--print-config" if tool == "distill" else "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--student.train.iter" in err


def test_a_failed_run_without_checkpoint_accepts_the_corrected_config(tmp_path):
    """A run that failed before training leaves config.yaml only: the corrected rerun must not need --resume."""
    from lix_train.cli import UserError, prepare_run_dir
    from lix_train.experiment import DEFAULT_PRESET, PRESETS_DIR, ExperimentConfig
    from lix_train.config import resolve

    cfg = resolve(ExperimentConfig, PRESETS_DIR, DEFAULT_PRESET, None, {})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("student: {train: {iters: 999}}\n")
    assert prepare_run_dir(run_dir, cfg, None, True) is None
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["student"]["train"]["iters"] == cfg.student.train.iters  # the new config replaced the old
    (run_dir / "config.yaml").write_text("student: {train: {iters: 999}}\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "latest.pt").write_bytes(b"")
    with pytest.raises(UserError, match="different config"):
        prepare_run_dir(run_dir, cfg, None, True)


def test_a_tool_started_without_make_setup_says_what_to_run(tmp_path):
    """`python -m lix_train.<tool>` on a Python without torch: one line naming `make setup`, exit 2."""
    hide_torch = ("import importlib.util as u, sys; real = u.find_spec; "
                  "u.find_spec = lambda name, *a: None if name == 'torch' else real(name, *a); "
                  "sys.argv = ['-m']; import lix_train")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", hide_torch], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "lacks torch" in result.stderr and "make setup" in result.stderr
    as_library = subprocess.run([sys.executable, "-c", hide_torch.replace("sys.argv = ['-m']; ", "")], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
    assert as_library.returncode == 0, as_library.stderr  # lix_deploy's torch-free runtime imports lix_train


def test_help_shows_the_presets_defaults_once(capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill.main(["--preset", "vkitti2", "--help-all"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    iters = text.split("--teacher.train.iters INT", 1)[1].split("--teacher.train.batch_size", 1)[0]
    assert iters.count("(default:") == 1 and "(default: 40000)" in iters  # the preset's, not the built-in 20000
    assert re.search(r"\(default: [^)]*\) \(default:", text) is None  # argparse's own copy is not added
    assert "defaults shown are those of preset 'vkitti2'" in text
