"""The entry points' shared surface: help, presets, config resolution, the data section, teacher keys."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cli_fixtures import FRAMES, HEIGHT, SCENES, TRAIN_SIZE, WIDTH
from lix_train import distill, evaluate, train_teacher
from lix_train.config import ConfigError, from_dict, resolve
from lix_train.data.build import build_datasets
from lix_train.data.classes import VKITTI2
from lix_train.data.config import DataConfig
from lix_train.data.sources import evenly_spaced
from lix_train.distillers.config import DistillConfig
from lix_train.experiment import PRESETS_DIR, ExperimentConfig, teacher_hash, teacher_key

TOOLS = {"distill": distill, "train_teacher": train_teacher, "evaluate": evaluate}
PRESETS = ("quick", "synthetic", "synthetic_v1", "vkitti2", "kitti", "nuimages")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_short_help_fits_a_screen_or_two_and_points_to_the_rest(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool].main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 120
    for flag in ("--preset", "--config", "--help-all", "--help-section", "--distill.method", "--data.root",
                 "--student.train.iters"):
        assert flag in text, f"{tool} --help does not mention {flag}"
    assert "distill.arfd (" in text and "--distill.arfd.perplexity" not in text  # the index, not every option
    with pytest.raises(SystemExit):
        TOOLS[tool].main(["--help-section", "distill"])
    section = capsys.readouterr().out
    assert "--distill.arfd.perplexity" in section and "--data.root" not in section


def test_help_section_names_the_sections_when_unknown(capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill.main(["--help-section", "distil"])
    assert exit_info.value.code == 2
    assert "no such section" in capsys.readouterr().err


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_all_documents_every_option(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool].main(["--help-all"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--preset", "--config", "--run-dir", "--print-config", "--data.modality", "--data.root",
                 "--teacher.train.iters", "--student.model.width", "--distill.method", "--eval.mode",
                 "--data.transforms.size", "--output.teachers_dir"):
        assert flag in text, f"{tool} --help does not mention {flag}"
    assert ("--resume" in text) == (tool != "evaluate")
    # every option carries help text, not just a default
    assert "Distillation method; the default is" in text and "Training iterations" in text


def test_print_config_resolves_the_quick_preset_by_default(capsys):
    assert distill.main(["--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["dataset"] == "synthetic" and cfg["data"]["root"] is None
    assert cfg["data"]["transforms"]["size"] == [96, 320]
    assert cfg["teacher"]["model"]["width"] == 0.25 and cfg["teacher"]["model"]["decoder_channels"] == 64
    assert cfg["distill"]["method"] == DistillConfig().method  # no preset sets it
    assert cfg["teacher"]["train"]["device"] == cfg["student"]["train"]["device"] == "cpu"


def test_preset_then_config_file_then_command_line(tmp_path, capsys):
    file = tmp_path / "mine.yaml"
    file.write_text(yaml.safe_dump({"student": {"train": {"iters": 77, "lr": 0.01}}, "distill": {"method": "dkd"}}))
    argv = ["--print-config", "--config", str(file), "--student.train.lr", "0.02", "--data.train_scenes", "Scene01,Scene02"]
    assert distill.main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["student"]["train"]["iters"] == 77          # file over preset
    assert cfg["student"]["train"]["lr"] == 0.02           # command line over file
    assert cfg["distill"]["method"] == "dkd"
    assert cfg["data"]["train_scenes"] == ["Scene01", "Scene02"]
    assert cfg["teacher"]["train"]["iters"] == yaml.safe_load(
        (PRESETS_DIR / "quick.yaml").read_text())["teacher"]["train"]["iters"]  # untouched: the preset's


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_a_valid_experiment(preset):
    cfg = resolve(ExperimentConfig, PRESETS_DIR, preset)
    assert cfg.teacher.model.num_classes == cfg.data.class_set.num_classes
    assert cfg.teacher.model.x_channels == cfg.data.x_channels
    if preset in ("vkitti2", "kitti", "nuimages"):  # GPU presets: full-width networks, mixed precision
        assert cfg.data.dataset != "synthetic" and cfg.data.root is None
        assert cfg.teacher.model.encoder in ("resnet34", "resnet50") and cfg.teacher.model.width == 1.0
        assert cfg.student.train.amp and cfg.teacher.train.amp
    else:
        assert cfg.data.dataset == "synthetic" and cfg.teacher.train.device == "cpu"


def test_synthetic_preset_is_the_cpu_study_protocol_v2_and_v1_stays_reachable():
    cfg = resolve(ExperimentConfig, PRESETS_DIR, "synthetic")
    # v2: a converged teacher (its val curve recorded), students at the converged budget.
    assert cfg.teacher.train.iters > cfg.student.train.iters >= 4000
    assert cfg.teacher.train.eval_every > 0 and cfg.student.train.eval_every == 0
    assert cfg.data.modality == "normals" and cfg.data.x_cache
    v1 = resolve(ExperimentConfig, PRESETS_DIR, "synthetic_v1")
    assert v1.teacher.train.iters == v1.student.train.iters == 1000
    assert v1.teacher.train.eval_every == v1.student.train.eval_every == 0
    # Everything else is v2's (v1 only says what differs): the same data, networks and optimiser.
    assert (v1.data, v1.student.model, v1.teacher.model) == (cfg.data, cfg.student.model, cfg.teacher.model)
    # The first two studies' teacher store folder (docs/studies/v1/results.md 0.3): v1 finds their teacher again.
    assert teacher_hash(v1) == "8e391f8a1714"


def test_a_preset_extends_another_and_a_loop_is_a_clear_error(tmp_path):
    (tmp_path / "base.yaml").write_text("student:\n  train: {iters: 700, lr: 0.5}\n")
    (tmp_path / "child.yaml").write_text("extends: base\nstudent:\n  train: {iters: 900}\n")
    cfg = resolve(ExperimentConfig, tmp_path, "child")
    assert (cfg.student.train.iters, cfg.student.train.lr) == (900, 0.5)
    (tmp_path / "loop.yaml").write_text("extends: loop2\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop\n")
    with pytest.raises(ConfigError, match=r"loop2?\.yaml: extends: 'loop2?' must name another preset"):
        resolve(ExperimentConfig, tmp_path, "loop")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match="unknown preset 'nowhere'"):
        resolve(ExperimentConfig, tmp_path, "orphan")


def test_class_count_and_x_channels_are_checked_across_sections():
    with pytest.raises(ConfigError, match=r"teacher\.model\.num_classes=14.*19 classes"):
        from_dict(ExperimentConfig, {"data": {"dataset": "kitti_semantics"}})
    with pytest.raises(ConfigError, match=r"teacher\.model\.x_channels=3.*'inverse_depth'.*1 channel"):
        from_dict(ExperimentConfig, {"data": {"modality": "inverse_depth"}})
    ok = from_dict(ExperimentConfig, {"data": {"modality": "disparity"}, "teacher": {"model": {"x_channels": 1}}})
    assert ok.data.x_channels == 1


def test_teacher_hash_follows_what_shapes_the_teacher_only():
    base = from_dict(ExperimentConfig, {})
    same = from_dict(ExperimentConfig, {
        "teacher": {"train": {"num_workers": 0, "progress": False, "log_every": 1, "eval_every": 3}},
        "student": {"train": {"iters": 600}, "model": {"width": 0.5}}, "distill": {"method": "kd"},
        "data": {"val_scenes": ["Scene02"], "max_test_frames": 3, "x_cache": True}, "output": {"name": "x"},
    })
    assert teacher_hash(same) == teacher_hash(base)
    for change in ({"teacher": {"train": {"iters": 600}}}, {"teacher": {"model": {"width": 0.5}}},
                   {"data": {"modality": "depth"}, "teacher": {"model": {"x_channels": 1}}},
                   {"data": {"train_scenes": ["Scene01"]}}, {"data": {"transforms": {"size": [64, 192]}}}):
        assert teacher_hash(from_dict(ExperimentConfig, change)) != teacher_hash(base), change
    assert teacher_key(base)["data"]["root"].startswith("embedded/")


def test_datasets_split_by_scene_and_downscale_after_x(tiny_synthetic):
    cfg = from_dict(DataConfig, {"root": str(tiny_synthetic), "train_scenes": [SCENES["train"]],
                                 "val_scenes": [SCENES["val"]], "test_scenes": [SCENES["test"]],
                                 "transforms": {"size": TRAIN_SIZE, "crop_size": TRAIN_SIZE}})
    data = build_datasets(cfg, "normals")
    assert set(data) == {"train", "val", "test"}
    for split, scene in SCENES.items():
        assert len(data[split]) == FRAMES
        assert all(name.startswith(scene + "/") for name in data[split].source.names)
        assert data[split].class_set is VKITTI2
    item = data["test"][0]
    assert item["image"].shape == (3, *TRAIN_SIZE) and item["x"].shape == (3, *TRAIN_SIZE)
    assert item["label"].shape == tuple(TRAIN_SIZE)
    student_items = build_datasets(cfg, None, ("val",))["val"]
    assert "x" not in student_items[0]


def test_sky_is_unknown_in_x(tiny_synthetic):
    """vKITTI2-format sky (65535 cm) is beyond max_depth: its normals are exactly zero, the road's are not."""
    cfg = from_dict(DataConfig, {"root": str(tiny_synthetic), "train_scenes": ["Scene01"], "val_scenes": ["Scene02"],
                                 "test_scenes": ["Scene03"], "transforms": {"size": [HEIGHT, WIDTH]}})
    item = build_datasets(cfg, "normals", ("test",))["test"][0]  # evaluation resize to the stored size: exact
    x, label = item["x"].numpy(), item["label"].numpy()
    sky, road = label == VKITTI2.names.index("Sky"), label == VKITTI2.names.index("Road")
    assert sky.any() and road.any()
    assert np.all(x[:, sky] == 0)
    assert np.all(np.linalg.norm(x[:, road], axis=0) > 0.5)


def test_synthetic_root_without_split_lists_reads_splits_json(tiny_synthetic, tmp_path):
    cfg = from_dict(DataConfig, {"root": str(tiny_synthetic)})
    with pytest.raises(Exception, match="splits.json"):
        build_datasets(cfg, None, ("train",))
    (tiny_synthetic / "splits.json").write_text('{"train": ["Scene01", "Scene02"], "val": ["Scene03"], "test": []}')
    try:
        sizes = {split: len(ds) for split, ds in build_datasets(cfg, None, ("train", "val")).items()}
    finally:
        (tiny_synthetic / "splits.json").unlink()
    assert sizes == {"train": 2 * FRAMES, "val": FRAMES}


def test_a_scene_in_two_splits_is_refused(tiny_synthetic):
    cfg = from_dict(DataConfig, {"root": str(tiny_synthetic), "train_scenes": ["Scene01"], "val_scenes": ["Scene01"],
                                 "test_scenes": ["Scene03"]})
    with pytest.raises(ConfigError, match="Scene01 are in both the train and the val split"):
        build_datasets(cfg, None, ("train",))


def test_frame_limits_spread_over_the_split(tiny_synthetic):
    assert evenly_spaced(10, 3) == [0, 4, 9]
    assert evenly_spaced(4, 0) == [0, 1, 2, 3] and evenly_spaced(4, 9) == [0, 1, 2, 3]
    cfg = from_dict(DataConfig, {"root": str(tiny_synthetic), "train_scenes": ["Scene01"], "val_scenes": ["Scene02"],
                                 "test_scenes": ["Scene03"], "max_train_frames": 2})
    train = build_datasets(cfg, None, ("train",))["train"]
    assert [n.rsplit("/", 1)[1] for n in train.source.names] == ["00000", "00002"]  # first and last frame


def test_compare_help_is_sectioned_with_the_synthetic_defaults(capsys):
    from lix_train import compare

    with pytest.raises(SystemExit):
        compare.main(["--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 250
    for flag in ("--tune", "--budgets", "--warm-start", "--results-json", "--help-all", "--help-section"):
        assert flag in text
    assert "those of preset 'synthetic'" in " ".join(text.split())
