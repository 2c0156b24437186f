"""The study's protocol tracks: tuned settings, tuning on val (test never read), student budgets,
the warm-start track, the lix_xzeros row, results.json and the GPU study script.

Planning tests train nothing; one tiny real study (baseline, kd and lix_xzeros at one seed, two
budgets, a warm start) and one tiny tuning grid run end to end on a generated set."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_fakes import NUM_CLASSES, SIG, FakeDistiller, SyntheticSegmentation, train_config
from lix_train import compare
from lix_train.cli import UserError
from lix_train.config import from_dict, to_dict
from lix_train.distillers import DISTILLERS
from lix_train.distillers.config import METHODS, DistillConfig
from lix_train.engine.checkpoint import CheckpointError, load_checkpoint, model_signature
from lix_train.engine.config import TrainConfig
from lix_train.engine.logging import read_csv
from lix_train.engine.trainer import Trainer
from lix_train.experiment import ExperimentConfig, teacher_key
from lix_train.study import grid, runner, tuning
from lix_train.study.grid import (
    ITERS_KEY, RunSpec, expand, expand_budgets, expand_warm_start, nest,
)
from lix_train.study.planning import StudySetup, check_start_weights, plan, resolve_base
from lix_train.study.records import is_finished
from lix_train.study.table import (RunResult, aggregate, aggregate_tuning, distiller_checks, results_json,
                                   val_choice)
from lix_train.study.table_md import format_markdown, format_tuning
from repo_paths import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
ITERS = 2


def _finished_val_run(run: Path, miou: float, cfg: ExperimentConfig | None = None) -> None:
    """A finished val-only run folder: its metrics.json, and its config.yaml when `cfg` is given (twins read it)."""
    import yaml

    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"split": "val", "student_val": {"miou": miou}}))
    if cfg is not None:
        (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))


def _plan_lines(capsys, *argv) -> dict[str, str]:
    capsys.readouterr()
    assert compare.main(["--preset", "quick", "--dry-run", *argv]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()[:1].isdigit()}
    lines["(header)"] = out.splitlines()[0]
    return lines


# --- tuned settings ------------------------------------------------------------------------------

def test_tuned_yaml_holds_val_chosen_settings_with_their_evidence_and_reads_only_method_options():
    tuned = tuning.load_tuned(METHODS)
    assert tuned["cwd"] == {"distill.cwd.temperature": 1.0, "distill.lambda_l": 1.0}
    assert tuned["lix"] == {"distill.lambda_l": 0.5, "distill.lambda_f": 0.3, "distill.balance": "cap",
                            "distill.arfd.stages": [0, 1, 2, 3], "distill.arfd.bandwidth": "median",
                            "distill.arfd.bandwidth_scale": 0.1} and tuned["aux_x"] == {}
    assert set(tuning.GRIDS) >= {"kd", "cwd", "dkd", "at", "mgd", "aux_x", "lix"}
    text = tuning.TUNED_FILE.read_text().splitlines()
    for method, overrides in tuned.items():
        read = DISTILLERS[method].options_read()
        assert all(key.split(".", 1)[1].split(".")[0] in read for key in overrides), method
        if overrides:  # a setting names its evidence: the comment block right above it has a --tune command
            at = next(i for i, line in enumerate(text) if line.startswith(f"{method}:"))
            block = []
            for line in reversed(text[:at]):
                if not line.startswith("#"):
                    break
                block.append(line)
            assert any("Evidence:" in line for line in block), method
            assert "--tune" in " ".join(text[:at]), method


def test_load_tuned_refuses_protocol_options_and_unknown_methods(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text("kd: {student.train.iters: 5}\n")
    with pytest.raises(ValueError, match="not a dotted distill option"):
        tuning.load_tuned(METHODS, path)
    path.write_text("kdd: {distill.kd.temperature: 2.0}\n")
    with pytest.raises(ValueError, match="unknown method 'kdd'"):
        tuning.load_tuned(METHODS, path)
    path.write_text("not_yet_a_method: {}\nkd: {distill.kd.temperature: 2.0}\n")  # an empty entry may lead its method
    assert tuning.load_tuned(METHODS, path) == {"kd": {"distill.kd.temperature": 2.0}}


def test_tuned_settings_reach_their_method_unless_untuned_or_set_by_the_study(tmp_path, capsys, monkeypatch):
    tuned_file = tmp_path / "tuned.yaml"
    tuned_file.write_text("cwd: {distill.cwd.temperature: 4.0, distill.lambda_l: 3.0}\n")
    monkeypatch.setattr(tuning, "TUNED_FILE", tuned_file)
    argv = ["--methods", "baseline,cwd", "--seeds", "1", "--out", str(tmp_path), "--no-control"]
    lines = _plan_lines(capsys, *argv)
    assert "distill.cwd.temperature=4.0 distill.lambda_l=3.0" in lines["cwd-s0"]
    assert "temperature" not in lines["baseline-s0"]
    assert "cwd: distill.cwd.temperature=4.0, distill.lambda_l=3.0" in lines["(header)"]
    untuned = _plan_lines(capsys, *argv, "--untuned")
    assert "temperature" not in untuned["cwd-s0"] and "--untuned" in untuned["(header)"]
    mine = _plan_lines(capsys, *argv, "--distill.cwd.temperature", "2")  # the study's own option wins
    assert "distill.lambda_l=3.0" in mine["cwd-s0"] and "temperature" not in mine["cwd-s0"]
    planned = {p.spec.name: p for p in plan(expand(["baseline", "cwd"], [0], tuned=tuning.load_tuned(METHODS)),
                                            StudySetup(preset="quick", out=tmp_path))}
    assert (planned["cwd-s0"].cfg.distill.cwd.temperature, planned["cwd-s0"].cfg.distill.lambda_l) == (4.0, 3.0)
    assert planned["cwd-s0"].spec.tuned == {"distill.cwd.temperature": 4.0, "distill.lambda_l": 3.0}


# --- tuning on val -------------------------------------------------------------------------------

def test_tuning_grids_are_valid_configs_of_options_their_method_reads():
    assert set(tuning.GRIDS) >= {"kd", "cwd", "dkd", "at", "mgd", "aux_x", "lix"}
    # lix: a block past the edge, three axis moves, then the three together
    assert len(tuning.grid_points("kd")) == 6 and len(tuning.grid_points("lix")) == 6 + 2 + 3 + 1
    for method in set(tuning.GRIDS) & set(DISTILLERS):
        read = DISTILLERS[method].options_read()
        for point in tuning.grid_points(method):
            cfg = from_dict(ExperimentConfig, nest({**point, "distill.method": method}))
            for key, value in point.items():
                _, section, *rest = key.split(".")
                node = getattr(cfg.distill, section)
                for part in rest:  # nested options such as distill.dwld.gate
                    node = getattr(node, part)
                assert node == value
                assert section in read, (method, key)


def test_a_grid_may_be_a_union_of_blocks_whose_first_points_keep_their_names(monkeypatch):
    monkeypatch.setitem(tuning.GRIDS, "kd", [{"distill.kd.temperature": (1.0, 4.0), "distill.lambda_l": (1.0,)},
                                             {"distill.kd.temperature": (1.0,), "distill.lambda_l": (0.5, 1.0)}])
    labels = [tuning.point_label(p) for p in tuning.grid_points("kd")]
    assert labels == ["temperature1-lambda_l1", "temperature4-lambda_l1", "temperature1-lambda_l0.5"]  # no repeat
    assert tuning.describe_grid("kd") == ("kd.temperature {1.0,4.0} x lambda_l {1.0} + "
                                          "kd.temperature {1.0} x lambda_l {0.5,1.0}")


def test_tune_plans_val_only_runs_over_the_preset_defaults(tmp_path, capsys):
    lines = _plan_lines(capsys, "--tune", "kd", "--tune", "cwd", "--seeds", "2", "--out", str(tmp_path))
    runs = [name for name in lines if name.startswith("tune-")]
    assert len(runs) == (1 + 6 + 8) * 2 and "tune-kd-temperature4-lambda_l0.5-s1" in runs
    assert "tune-baseline-s0" in runs and "tune-baseline-s1" in runs  # the val reference at the same seeds
    assert all("(val only)" in lines[n] and "eval.score_test=False" in lines[n] for n in runs)
    assert "tune-cwd-temperature1-lambda_l1-s0" in runs  # the grid, not tuned.yaml, sets cwd's options
    assert "distill.cwd.temperature=1.0 distill.lambda_l=1.0" in lines["tune-cwd-temperature1-lambda_l1-s0"]
    assert not any(name.startswith(("baseline", "control")) for name in lines)


def test_tune_top_carries_each_methods_best_first_seed_points_to_the_later_seeds(tmp_path, capsys):
    base = ["--tune", "kd", "--seeds", "3", "--tune-top", "2", "--out", str(tmp_path)]
    assert compare.main(["--preset", "quick", "--dry-run", *base]) == 2  # seed 0 not screened yet: refused
    err = capsys.readouterr().err
    assert "--tune: kd: 6 of 6 points unfinished at seed 0" in err and len(err.strip().splitlines()) == 1
    scores = {"temperature1-lambda_l2": 0.45, "temperature4-lambda_l0.5": 0.47}
    for point in tuning.grid_points("kd"):
        _finished_val_run(tmp_path / "runs" / tuning.tuning_run_name("kd", point, 0),
                          scores.get(tuning.point_label(point), 0.40))
    lines = _plan_lines(capsys, *base)
    later = sorted(n for n in lines if n.startswith("tune-kd") and not n.endswith("-s0"))
    assert later == ["tune-kd-temperature1-lambda_l2-s1", "tune-kd-temperature1-lambda_l2-s2",
                     "tune-kd-temperature4-lambda_l0.5-s1", "tune-kd-temperature4-lambda_l0.5-s2"]
    assert sum(n.startswith("tune-kd") and n.endswith("-s0") for n in lines) == 6  # the whole screen at seed 0
    assert {"tune-baseline-s1", "tune-baseline-s2"} <= set(lines)  # the reference at every seed


def test_the_screen_counts_a_point_whose_seed_0_run_is_a_finished_twin_of_another_study(tmp_path, capsys, monkeypatch):
    # a grid block that repeats an ablation variant: its seed-0 run is that variant's folder, not a tune-* one
    monkeypatch.setitem(tuning.GRIDS, "kd", {"distill.kd.temperature": (1.0, 4.0), "distill.lambda_l": (1.0,)})
    setup = StudySetup(preset="quick", out=tmp_path)
    seed0 = {p.spec.name: p for p in plan(tuning.expand_tuning(["kd"], [0]), setup)}
    own, twin = "tune-kd-temperature1-lambda_l1-s0", "tune-kd-temperature4-lambda_l1-s0"
    for folder, name, miou in ((own, own, 0.41), ("temperature-4-s0", twin, 0.45)):
        _finished_val_run(tmp_path / "runs" / folder, miou, seed0[name].cfg)
    assert compare.finished_val(setup, ["kd"], [0]) == {own: 0.41, twin: 0.45}
    lines = _plan_lines(capsys, "--tune", "kd", "--seeds", "2", "--tune-top", "1", "--out", str(tmp_path))
    assert "same as temperature-4-s0" in lines[twin]
    assert "tune-kd-temperature4-lambda_l1-s1" in lines and "tune-kd-temperature1-lambda_l1-s1" not in lines


def test_a_point_screened_out_keeps_the_later_seeds_an_earlier_screen_finished(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(tuning.GRIDS, "kd", {"distill.kd.temperature": (1.0, 4.0), "distill.lambda_l": (1.0,)})
    setup = StudySetup(preset="quick", out=tmp_path)
    planned = {p.spec.name: p for p in plan(tuning.expand_tuning(["kd"], [0, 1, 2]), setup)}
    weak, strong = "tune-kd-temperature1-lambda_l1", "tune-kd-temperature4-lambda_l1"
    for name, miou in ((f"{weak}-s0", 0.41), (f"{strong}-s0", 0.45), (f"{weak}-s1", 0.42)):
        _finished_val_run(tmp_path / "runs" / name, miou, planned[name].cfg)
    lines = _plan_lines(capsys, "--tune", "kd", "--seeds", "3", "--tune-top", "1", "--out", str(tmp_path))
    assert f"{strong}-s1" in lines and f"{strong}-s2" in lines  # carried: it runs at every seed
    assert "finished" in lines[f"{weak}-s1"]  # screened out, but its finished seed-1 run stays in the table
    assert f"{weak}-s2" not in lines  # and nothing new is trained for it


def test_a_screened_tuning_table_chooses_among_the_points_at_every_seed():
    val = {0: 0.50, 1: 0.41, 2: 0.42}  # the best at seed 0 (temperature1-lambda_l0.5) fades at the later seeds
    first = {tuning.tuning_run_name("kd", p, 0): (0.45 if tuning.point_label(p) == "temperature4-lambda_l2" else
                                                  0.40) for p in tuning.grid_points("kd")}
    first["tune-kd-temperature1-lambda_l0.5-s0"] = val[0]
    first["tune-kd-temperature4-lambda_l1-s0"] = 0.48  # second at seed 0: carried with the first
    specs = tuning.expand_tuning(["kd"], [0, 1, 2], top=2, finished_val=first)
    assert {s.variant for s in specs if s.seed == 2 and s.method == "kd"} == {"temperature1-lambda_l0.5",
                                                                             "temperature4-lambda_l1"}
    own = {"temperature4-lambda_l1": {0: 0.48, 1: 0.46, 2: 0.47}, "temperature1-lambda_l0.5": val}
    base = {0: 0.40, 1: 0.38, 2: 0.39}
    results = [RunResult(s, _metrics(None, base[s.seed] if s.method == "baseline" else
                                     own.get(s.variant, {}).get(s.seed, first.get(s.name, 0.0)))) for s in specs]
    table = aggregate_tuning(results, {}, "c", "c")
    rows = table["methods"]["kd"]["rows"]
    assert [len(r["seeds"]) for r in rows] == [3, 3, 1, 1, 1, 1]  # carried points first, each group best first
    assert rows[0]["point"] == "temperature4-lambda_l1" and rows[2]["point"] == "temperature4-lambda_l2"
    assert table["methods"]["kd"]["best"] == {"distill.kd.temperature": 4.0, "distill.lambda_l": 1.0}
    md = format_tuning(table)
    assert "A screen (--tune-top)" in md
    assert "| distill.kd.temperature=4.0, distill.lambda_l=2.0 | 45.0 | +5.0 | 45.0 |" in md  # vs seed 0's 40.0
    assert "| distill.kd.temperature=4.0, distill.lambda_l=1.0 | 47.0 ± 1.0 | +8.0 | 48.0, 46.0, 47.0 |" in md
    with pytest.raises(ValueError, match="need at least one point"):
        tuning.expand_tuning(["kd"], [0, 1], top=0, finished_val=first)


@pytest.mark.parametrize("extra, message", [
    (["--tune-top", "2"], "--tune-top 2: needs --tune METHOD"),
    (["--budgets", "2,3", "--only-budget", "5"], "--only-budget 5: not one of --budgets (2,3)"),
    (["--tune", "kd", "--tune-top", "0"], "--tune-top 0: need at least one point"),
    (["--tune", "fancy"], "--tune: unknown method 'fancy'"),
    (["--tune", "baseline"], "no tuning grid"),
    (["--tune", "kd", "--budgets", "2,3"], "run --budgets in a call of its own"),
    (["--budgets", "2,x"], "--budgets '2,x'"),
    (["--warm-start", "0"], "--warm-start 0"),
    (["--methods", "baseline,lix_zeros"], "unknown method 'lix_zeros'"),
])
def test_bad_track_requests_end_in_one_line(tmp_path, capsys, extra, message):
    assert compare.main(["--preset", "quick", "--out", str(tmp_path), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_val_only_run_does_not_finish_a_run_that_needs_test(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"split": "val", "student_val": {"miou": 0.4}}))
    assert is_finished(tmp_path) and not is_finished(tmp_path, needs_test=True)
    (tmp_path / "metrics.json").write_text(json.dumps({"split": "test", "student": {"miou": 0.4}}))
    assert is_finished(tmp_path, needs_test=True)


def test_a_study_run_with_score_test_false_is_val_only_and_its_val_metrics_finish_it(tmp_path, capsys):
    lines = _plan_lines(capsys, "--methods", "baseline", "--no-control", "--seeds", "1", "--out", str(tmp_path),
                        "--eval.score_test", "false")
    assert "(val only)" in lines["baseline-s0"] and "to run" in lines["baseline-s0"]
    run_dir = tmp_path / "runs" / "baseline-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"split": "val", "student_val": {"miou": 0.4}}))
    setup = StudySetup(preset="quick", out=tmp_path, overrides={"eval": {"score_test": False}})
    [planned] = plan(expand(["baseline"], [0], []), setup)
    assert not planned.spec.needs_test and planned.done  # a rerun skips it instead of training it again


def test_a_finished_run_of_another_study_with_the_same_config_serves_a_val_only_spec(tmp_path):
    import yaml

    val_only = StudySetup(preset="quick", out=tmp_path, overrides={"eval": {"score_test": False}})
    [first] = plan(expand(["kd"], [0]), val_only)
    other = tmp_path / "runs" / "tune-kd-x-s0"  # e.g. a --tune point that repeats this config
    other.mkdir(parents=True)
    (other / "config.yaml").write_text(yaml.safe_dump(yaml.safe_load(yaml.safe_dump(to_dict(first.cfg)))))
    (other / "metrics.json").write_text(json.dumps({"split": "val", "student_val": {"miou": 0.4}}))
    [served] = plan(expand(["kd"], [0]), val_only)
    assert served.same_as == "tune-kd-x-s0" and served.run_dir == other and served.done
    with_test = StudySetup(preset="quick", out=tmp_path)  # a study that reads test: a val-only run does not serve it
    assert plan(expand(["kd"], [0]), with_test)[0].same_as is None
    changed = StudySetup(preset="quick", out=tmp_path, overrides={"eval": {"score_test": False},
                                                                  "distill": {"kd": {"temperature": 3.0}}})
    assert plan(expand(["kd"], [0]), changed)[0].same_as is None  # another config trains its own run
    assert plan(expand(["kd"], [1]), val_only)[0].same_as is None  # another seed too


def test_score_test_is_bookkeeping_for_continuing_runs_but_not_for_the_teacher_store():
    from lix_train.experiment import NOT_RESULT_AFFECTING

    assert "eval.score_test".startswith(NOT_RESULT_AFFECTING)
    plain = from_dict(ExperimentConfig, {})
    assert "init_from" not in teacher_key(plain)["train"]  # existing teachers keep their store folder
    warm = from_dict(ExperimentConfig, {"teacher": {"train": {"init_from": "a/teacher.pt"}}})
    assert teacher_key(warm)["train"]["init_from"] == "a/teacher.pt"


# --- budgets and warm start: planning --------------------------------------------------------------

def test_budgets_keep_the_preset_budget_as_the_main_runs_and_vary_only_iters(tmp_path):
    quick_iters = resolve_base(StudySetup(preset="quick", out=tmp_path)).student.train.iters
    specs = expand_budgets(["baseline", "lix_xzeros"], [0, 1], [250, quick_iters, 1000], preset_iters=quick_iters)
    assert [s.name for s in specs][:4] == ["baseline-i250-s0", "baseline-i250-s1", "lix_xzeros-i250-s0",
                                           "lix_xzeros-i250-s1"]
    assert not any(f"-i{quick_iters}-" in s.name for s in specs) and len(specs) == 8
    assert specs[2].overrides["data.zero_x"] is True and specs[2].label == "lix_xzeros" and specs[2].method == "lix"
    main = expand(["baseline", "lix_xzeros"], [0, 1])
    planned = {p.spec.name: p for p in plan(main + specs, StudySetup(preset="quick", out=tmp_path))}
    assert planned["baseline-i1000-s1"].cfg.student.train.iters == 1000
    assert planned["baseline-s1"].cfg.student.train.iters == quick_iters  # the quick preset's budget
    assert planned["lix_xzeros-s0"].teacher_dir != planned["baseline-s0"].teacher_dir  # the X = zeros teacher
    # only a budget run may change the student's iterations
    rogue = RunSpec("rogue-s0", "methods", "", "baseline", 0, {**main[0].overrides, ITERS_KEY: 70})
    with pytest.raises(UserError, match="differ in student.train.iters"):
        plan([*main, rogue], StudySetup(preset="quick", out=tmp_path))


def test_x_zeros_twins_and_the_wide_rgb_student_are_rows_of_their_own(tmp_path):
    rows = grid.row_names()
    assert {"cwd_xzeros", "halluc_xzeros", "lix_xzeros", "baseline_wide"} <= set(rows)
    assert "aux_x_xzeros" not in rows and "baseline_xzeros" not in rows  # no teacher: no twin
    assert grid.named_row("kd") is None and grid.named_row("nope_xzeros") is None
    specs = expand(["baseline", "cwd", "cwd_xzeros", "baseline_wide"], [0], tuned={"cwd": {"distill.lambda_l": 3.0}})
    by_name = {s.name: s for s in specs}
    twin, wide = by_name["cwd_xzeros-s0"], by_name["baseline_wide-s0"]
    assert twin.method == "cwd" and twin.label == "cwd_xzeros" and twin.overrides["data.zero_x"] is True
    assert twin.tuned == {"distill.lambda_l": 3.0}  # the twin runs at its method's tuned setting
    assert wide.method == "baseline" and wide.overrides["student.model.width"] == grid.WIDE_WIDTH
    assert wide.varies == ("student.model.width",)
    planned = {p.spec.name: p for p in plan(specs, StudySetup(preset="quick", out=tmp_path))}  # a valid study
    assert planned["baseline_wide-s0"].cfg.student.model.width == grid.WIDE_WIDTH
    assert planned["cwd_xzeros-s0"].teacher_dir != planned["cwd-s0"].teacher_dir == planned["baseline-s0"].teacher_dir
    # only the wide row may change the student's width
    rogue = RunSpec("rogue-s0", "methods", "", "baseline", 0, {**by_name["baseline-s0"].overrides,
                                                              "student.model.width": 0.5})
    with pytest.raises(UserError, match="student.model.width"):
        plan([by_name["baseline-s0"], rogue], StudySetup(preset="quick", out=tmp_path))
    assert compare.parse_methods("cwd_xzeros,baseline_wide") == ["baseline", "cwd_xzeros", "baseline_wide"]
    with pytest.raises(UserError, match="unknown method 'aux_x_xzeros'"):
        compare.parse_methods("aux_x_xzeros")


def test_one_seed_rows_and_warm_seeds_shrink_only_what_they_name(tmp_path, capsys):
    specs = expand(["baseline", "kd", "cwd"], [0, 1, 2], one_seed=["kd"])
    assert [s.name for s in specs] == ["baseline-s0", "baseline-s1", "baseline-s2", "kd-s0", "cwd-s0", "cwd-s1",
                                       "cwd-s2"]
    with pytest.raises(ValueError, match="one-seed row 'dkd' is not a row"):
        expand(["baseline", "kd"], [0, 1], one_seed=["dkd"])
    lines = _plan_lines(capsys, "--methods", "baseline,kd", "--seeds", "2", "--out", str(tmp_path), "--no-control",
                        "--one-seed", "kd", "--budgets", "40", "--warm-start", "40", "--warm-seeds", "1")
    assert "kd-s0" in lines and "kd-s1" not in lines
    assert "kd-i40-s1" in lines  # the budgets still run every seed
    assert "warm-kd-s0" in lines and "warm-kd-s1" not in lines and "warm-baseline-s1" not in lines
    for bad, message in ((["--one-seed", "dkd"], "--one-seed: 'dkd' is not one of the study's rows"),
                         (["--warm-start", "40", "--warm-seeds", "3"], "--warm-seeds 3: between 1 and --seeds"),
                         (["--warm-seeds", "1"], "--warm-seeds needs --warm-start")):
        with pytest.raises(UserError, match=message):
            compare.run(compare.build_parser().parse_args(["--preset", "quick", "--methods", "baseline,kd", "--seeds",
                                                           "2", "--out", str(tmp_path), "--dry-run", *bad]))


def test_warm_start_runs_start_from_their_seeds_baseline_student(tmp_path, capsys):
    specs = expand_warm_start(["kd"], [0, 1], 40, lambda s: f"X/baseline-s{s}/student.pt")
    assert [s.name for s in specs] == ["warm-baseline-s0", "warm-baseline-s1", "warm-kd-s0", "warm-kd-s1"]
    assert specs[3].overrides["student.train.init_from"] == "X/baseline-s1/student.pt"
    assert specs[3].after == ("baseline-s1",) and specs[3].overrides[ITERS_KEY] == 40
    # the wide student is another network: the baseline's weights do not fit it, so it has no warm start
    wide = expand_warm_start(["baseline_wide", "cwd_xzeros"], [0], 40, lambda s: f"X/baseline-s{s}/student.pt")
    assert [s.name for s in wide] == ["warm-baseline-s0", "warm-cwd_xzeros-s0"]
    lines = _plan_lines(capsys, "--methods", "baseline,kd", "--seeds", "1", "--out", str(tmp_path), "--warm-start",
                        "40", "--no-control")
    assert "after baseline-s0" in lines["warm-kd-s0"]
    assert f"student.train.init_from={tmp_path}/runs/baseline-s0/student.pt" in lines["warm-kd-s0"]
    with pytest.raises(UserError, match="starts from baseline-s0, which is not a run of this study"):
        plan(specs[2:3], StudySetup(preset="quick", out=tmp_path))


@pytest.mark.parametrize("jobs", [1, 2])
def test_warm_start_runs_wait_for_the_baseline_runs(tmp_path, monkeypatch, jobs):
    specs = expand(["baseline", "kd"], [0, 1]) + expand_warm_start(["kd"], [0, 1], 40, lambda s: f"b{s}/student.pt")
    setup = StudySetup(preset="quick", out=tmp_path, jobs=jobs)
    planned = plan(specs, setup)
    order: list[list[str]] = []

    def finish(run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"split": "test", "student": {"miou": 0.5}}))

    def fake_jobs(jobs, workers, say):
        order.append([j.label for j in jobs])
        for job in jobs:
            finish(Path(job.argv[job.argv.index("--run-dir") + 1]))
        return []

    def fake_call(module, argv, isolate):
        order.append([Path(argv[argv.index("--run-dir") + 1]).name])
        finish(Path(argv[argv.index("--run-dir") + 1]))
        return 0

    monkeypatch.setattr(runner, "ensure_teachers", lambda pending, setup, say: None)
    monkeypatch.setattr(runner, "run_jobs", fake_jobs)
    monkeypatch.setattr(runner, "call_entry_point", fake_call)
    runner.execute(planned, setup, say=lambda line: None)
    flat = [name for phase in order for name in phase]
    warm = [i for i, name in enumerate(flat) if "warm" in name]
    assert len(warm) == 4 and min(warm) == 4  # every main run first
    if jobs > 1:
        assert len(order) == 2 and all("warm" in label for label in order[1])


# --- init_from in the trainer and in distill -----------------------------------------------------

def _cfg(**overrides) -> TrainConfig:
    """engine_fakes' tiny schedule, shorter and without checkpoints or validation."""
    return train_config(**{"iters": 4, "warmup_iters": 1, "ckpt_every": 0, "log_every": 1, "eval_every": 0,
                           **overrides})


def test_init_from_starts_from_those_weights_with_a_fresh_optimiser(tmp_path):
    torch.manual_seed(0)
    summary = Trainer(FakeDistiller(), SyntheticSegmentation(), _cfg(), tmp_path / "a", signature=SIG).run()
    trained = load_checkpoint(summary.checkpoint)["model"]
    torch.manual_seed(1)
    task = FakeDistiller()
    trainer = Trainer(task, SyntheticSegmentation(), _cfg(iters=2, init_from=summary.checkpoint), tmp_path / "b",
                      signature=SIG)
    assert trainer._resume() == (0, None)  # a fresh run: iteration 0, no resume checkpoint
    assert all(torch.equal(v, trained[k]) for k, v in task.student.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {}  # fresh optimiser
    again = Trainer(FakeDistiller(), SyntheticSegmentation(), _cfg(iters=2, init_from=summary.checkpoint),
                    tmp_path / "c", signature=SIG).run()
    assert (again.start_iteration, again.iterations_run) == (0, 2)
    wrong = model_signature("tiny", {"width": 16}, NUM_CLASSES)
    with pytest.raises(CheckpointError, match=r"latest.pt: train.init_from: architecture .*width"):
        Trainer(FakeDistiller(), SyntheticSegmentation(), _cfg(init_from=summary.checkpoint), tmp_path / "d",
                signature=wrong).run()
    with pytest.raises(CheckpointError, match=r"missing.pt: train.init_from: checkpoint file not found"):
        Trainer(FakeDistiller(), SyntheticSegmentation(), _cfg(init_from=tmp_path / "missing.pt"), tmp_path / "e",
                signature=SIG).run()


def test_distill_refuses_a_missing_init_from_before_any_work(tmp_path, capsys):
    from lix_train import distill

    missing = tmp_path / "nowhere" / "student.pt"
    assert distill.main(["--run-dir", str(tmp_path / "run"), "--student.train.init_from", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: student.train.init_from: checkpoint file not found" in err
    assert not (tmp_path / "run").exists()


def test_a_run_made_before_init_from_existed_still_continues(tmp_path):
    import yaml

    from lix_train.cli import _config_differences, config_yaml

    cfg = from_dict(ExperimentConfig, {})
    old = yaml.safe_load(config_yaml(cfg))
    for role in ("teacher", "student"):
        del old[role]["train"]["init_from"]
    del old["eval"]["score_test"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert _config_differences(tmp_path / "config.yaml", cfg) == []
    old["student"]["train"]["init_from"] = "elsewhere/student.pt"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert _config_differences(tmp_path / "config.yaml", cfg) == ["student.train.init_from"]


# --- tables, results.json and plots from made-up metrics -----------------------------------------------

def _metrics(test: float | None, val: float, teacher: float = 0.6, init_from: str | None = None) -> dict:
    classes = {"road": val, "car": val / 2}
    out = {"split": "test" if test is not None else "val", "student_val": {"miou": val, "per_class_iou": classes},
           "commit": "abc", "init_from": init_from}
    if test is not None:
        out["student"] = {"miou": test, "per_class_iou": {"road": test, "car": test / 2}}
        out["teacher"] = {"miou": teacher, "per_class_iou": {"road": 0.9, "car": 0.3}}
    else:
        out["teacher_val"] = {"miou": teacher}
    return out


def _made_up_study(val_only: bool = False):
    """Main rows, budgets 1 / 4 and a warm-start track; val = test - 2 points (val alone when `val_only`)."""
    main = expand(["baseline", "kd", "lix_xzeros"], [0, 1])
    budgets = expand_budgets(["baseline", "kd", "lix_xzeros"], [0, 1], [1, 4], preset_iters=2)
    warm = expand_warm_start(["baseline", "kd", "lix_xzeros"], [0, 1], 3, lambda s: f"b{s}")
    score = {"baseline": 0.40, "kd": 0.45, "lix_xzeros": 0.42}
    results = []
    for spec in main + budgets + warm:
        bump = {"1": -0.05, "4": 0.05}.get(spec.variant, 0.0) + (0.02 if spec.group == "warm_start" else 0.0)
        test = score[spec.label] + bump + 0.01 * spec.seed
        results.append(RunResult(spec, _metrics(None if val_only else test, test - 0.02)))
    return results


def test_budget_and_warm_tables_and_results_json():
    results = _made_up_study()
    protocol = {"student": {"iters": 2}, "preset": "quick", "modality": "normals"}
    table = aggregate(results, [], protocol, "python -m lix_train.compare ...", "c0ffee", budgets=[1, 4],
                      warm_iters=3, default_method="lix")
    rows = {r["method"]: r for r in table["budgets"]["rows"]}
    assert table["budgets"]["iters"] == [1, 2, 4] and list(rows) == ["baseline", "kd", "lix_xzeros"]
    assert rows["kd"]["by_budget"]["2"]["miou"] == pytest.approx([0.45, 0.46])  # the main runs
    assert rows["kd"]["by_budget"]["4"]["runs"] == ["kd-i4-s0", "kd-i4-s1"]
    assert rows["kd"]["by_budget"]["1"]["val_mean"] == pytest.approx(0.385)
    warm = {r["method"]: r for r in table["warm_start"]["rows"]}
    assert warm["kd"]["delta_vs_baseline"] == pytest.approx(0.05)  # against the warm baseline, not the cold one
    assert table["warm_start"]["start_mean"] == pytest.approx(0.405)

    summary = results_json(table)
    assert summary["teacher"] == 60.0 and summary["default_method"] == "lix"
    assert summary["methods"]["kd"]["test"] == [45.0, 46.0] and summary["methods"]["kd"]["val"] == [43.0, 44.0]
    assert set(summary["methods"]) == {"baseline", "kd", "lix_xzeros"}
    assert summary["budgets"]["4"]["baseline"]["test"] == [45.0, 46.0]
    assert summary["budgets"]["2"]["kd"] == summary["methods"]["kd"]
    assert summary["warm_start"]["iters"] == 3 and summary["warm_start"]["methods"]["kd"]["test"] == [47.0, 48.0]
    assert summary["missing"] == []
    # written mid-study, it names the runs not in it yet
    unfinished = [r if r.spec.name not in ("kd-s1", "warm-kd-s0") else RunResult(r.spec, None) for r in results]
    partial = results_json(aggregate(unfinished, [], protocol, "cmd", "c0ffee", budgets=[1, 4], warm_iters=3))
    assert partial["missing"] == ["kd-s1", "warm-kd-s0"] and partial["methods"]["kd"]["test"] == [45.0]
    assert summary["protocol"]["commit"] == "c0ffee" and summary["protocol"]["preset"] == "quick"

    md = format_markdown({**table, "protocol": _protocol()})
    assert "## Student iteration budgets" in md and "| model | 1 test | 1 val | 2 test | 2 val | 4 test | 4 val |" in md
    assert "## Warm start: 3 more iterations from the baseline students" in md
    assert "| lix_xzeros (LIX from the X = zeros teacher) |" in md


def _row(method, val):
    return {"method": method, "val_mean": None if not val else sum(val) / len(val), "val_seeds": list(range(len(val)))}


def test_val_choice_takes_the_best_val_mean_among_the_rows_run_at_the_most_seeds():
    rows = [_row("baseline", [0.50, 0.52, 0.51]), _row("kd", [0.49, 0.50, 0.51]), _row("cwd", [0.55, 0.53, 0.54]),
            _row("mgd", [0.60]),  # one lucky seed cannot win
            _row("cwd_xzeros", [0.58, 0.58, 0.58]), _row("at", [])]
    choice = val_choice(rows, {"baseline", "cwd_xzeros"})
    assert choice["method"] == "cwd" and choice["seeds"] == 3 and choice["val_mean"] == pytest.approx(0.54)
    assert choice["runner_up"] == "kd" and choice["margin"] == pytest.approx(0.04)
    assert val_choice(rows, {"baseline", "cwd_xzeros", "cwd", "kd"})["method"] == "mgd"  # then one seed is the most
    assert val_choice([_row("baseline", [0.5])], {"baseline"}) is None
    assert val_choice([_row("kd", [0.5])])["runner_up"] is None


def test_the_table_names_the_distiller_its_val_scores_choose_beside_the_package_default():
    results = _made_up_study()
    protocol = {"student": {"iters": 2}, "preset": "quick", "modality": "normals"}
    table = aggregate(results, [], protocol, "cmd", "c0ffee", default_method="lix")
    # the baseline and the named row lix_xzeros are no candidates, though lix_xzeros scores 42 > baseline's 40
    assert table["val_choice"]["method"] == "kd" and table["val_choice"]["runner_up"] is None
    assert results_json(table)["val_best_method"] == "kd"
    md = format_markdown({**table, "protocol": _protocol()})
    assert ("Chosen on val: **kd**, the best val mean (43.5) among the distillers scored at 2 seeds. The package "
            "default (`distill.method`) is `lix`: the evidence here chooses another.") in md
    val_md = format_markdown({**aggregate(_made_up_study(val_only=True), [], protocol, "cmd", "c0ffee",
                                          default_method="kd"), "protocol": _protocol()})
    assert "Chosen on val: **kd**" in val_md and "is `kd`, the same." in val_md


def test_distiller_checks_read_the_gap_the_seeds_and_the_x_zeros_twin():
    def row(method, seeds):
        return {"method": method, "miou": seeds, "mean": sum(seeds) / len(seeds),
                "gap_share": (sum(seeds) / len(seeds) - 0.50) / 0.20}
    table = {"teacher": {"miou": 0.70},
             "methods": [row("baseline", [0.49, 0.50, 0.51]), row("cwd", [0.54, 0.55, 0.56]),
                         row("cwd_xzeros", [0.51, 0.51, 0.51])]}
    checks = distiller_checks(table, "cwd")
    assert checks["gap_share"] == pytest.approx(0.25) and checks["every_seed_above"] and checks["seeds"] == 3
    assert checks["xzeros_kept"] == pytest.approx(0.2)  # 1 of its 5 points survive without geometry
    table["methods"][1]["miou"] = [0.50, 0.55, 0.60]  # same mean, one seed under a baseline seed
    assert not distiller_checks(table, "cwd")["every_seed_above"]
    assert distiller_checks(table, "kd") is None and distiller_checks(table, None) is None
    losing = {"teacher": {"miou": 0.7},
              "methods": [row("baseline", [0.5]), row("lix", [0.49]), row("lix_xzeros", [0.5])]}
    assert distiller_checks(losing, "lix")["xzeros_kept"] is None  # no gain to keep


def test_table_md_checks_the_val_chosen_distiller_on_test_at_every_budget():
    protocol = {"student": {"iters": 2}, "preset": "quick", "modality": "normals"}
    table = aggregate(_made_up_study(), [], protocol, "cmd", "c0ffee", budgets=[1, 4], default_method="lix")
    checks = table["checks"]
    assert checks["method"] == "kd" and checks["every_seed_above"] and checks["xzeros_kept"] is None
    assert checks["gap_share"] == pytest.approx(0.05 / 0.195)
    assert checks["gap_share_by_budget"]["1"] == pytest.approx(0.05 / 0.245)
    assert checks["gap_share_by_budget"]["4"] == pytest.approx(0.05 / 0.145)
    md = format_markdown({**table, "protocol": _protocol()})
    assert "Checks of kd on test against the labels-only baseline:" in md
    assert ("- share of the teacher gap closed: 26 % (at 1 iterations 20 %; at 2 iterations 26 %; "
            "at 4 iterations 34 %)") in md
    assert "- every kd seed above every baseline seed: yes (2 and 2 seeds)" in md
    val_only = aggregate(_made_up_study(val_only=True), [], protocol, "cmd", "c0ffee")
    assert val_only["checks"] is None  # no test read, nothing to check


def test_the_control_at_several_teacher_seeds_reports_their_mean_and_spread(tmp_path):
    from lix_train.study import ablations

    control = ablations.select(["control"])
    specs = expand(["baseline"], [0], control, teacher_seeds=3)
    names = [s.name for s in specs]
    assert names == ["baseline-s0", "control-zero_x", "control-zero_x-t1", "control-zero_x-t2"]
    assert "teacher.train.seed" not in specs[1].overrides  # the preset's seed: the folder of earlier studies
    assert specs[3].overrides == {"data.zero_x": True, "teacher.train.seed": 2}
    planned = {p.spec.name: p for p in plan(specs, StudySetup(preset="quick", out=tmp_path))}
    dirs = {planned[n].teacher_dir for n in names[1:]}
    assert len(dirs) == 3 and planned["baseline-s0"].teacher_dir not in dirs
    scores = {"control-zero_x": 0.40, "control-zero_x-t1": 0.42, "control-zero_x-t2": 0.44}
    results = [RunResult(s, {"teacher": {"miou": scores[s.name], "per_class_iou": {}}} if s.teacher_only
                         else _metrics(0.41, 0.40)) for s in specs]
    table = aggregate(results, control, _protocol(), "cmd", "c0ffee")
    row = table["ablations"]["control"]["rows"][0]
    assert row["teacher_miou"] == pytest.approx(0.42) and row["teacher_std"] == pytest.approx(0.02)
    assert results_json(table)["teacher_xzeros_seeds"] == [40.0, 42.0, 44.0]
    assert "| control: teacher architecture, X = zeros | 42.0 ± 2.0 | 40.0 / 42.0 / 44.0 (teacher seeds) |" in (
        format_markdown(table))
    with pytest.raises(UserError, match="--control-seeds with --no-control"):
        compare.run(compare.build_parser().parse_args(["--preset", "quick", "--methods", "baseline", "--no-control",
                                                       "--control-seeds", "2", "--dry-run"]))


def test_the_table_names_the_software_each_run_computed_with():
    """Runs match bit for bit only on one software stack: the table counts the runs per stack."""
    import torch

    from lix_train.report import software_environment

    here = software_environment()
    assert here["torch"] == torch.__version__ and here["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert here["label"].startswith(f"torch {torch.__version__}, numpy ") and "opencv " in here["label"]
    results = _made_up_study()
    for i, r in enumerate(results):
        r.metrics["environment"] = {"label": "stack A" if i % 3 else "stack B"}
    results[0] = RunResult(results[0].spec, {k: v for k, v in results[0].metrics.items() if k != "environment"})
    table = aggregate(results, [], {"student": {"iters": 2}}, "cmd", "c")
    b = (len(results) - 1) // 3  # runs 3, 6, 9, ...
    a = len(results) - 1 - b
    assert table["run_environments"] == {"unrecorded": 1, "stack A": a, "stack B": b}
    md = format_markdown({**table, "protocol": _protocol()})
    assert f"Software: unrecorded (1); stack A ({a}); stack B ({b})" in md


def test_the_warm_start_track_starts_where_its_own_seeds_baselines_ended():
    """A track at seed 0 alone starts from baseline-s0, so its starting score is that run's, not the mean over
    every baseline seed; table.md names the seeds."""
    main = expand(["baseline", "kd"], [0, 1])
    warm = expand_warm_start(["baseline", "kd"], [0], 3, lambda s: f"b{s}")
    score = {"baseline-s0": 0.40, "baseline-s1": 0.50, "kd-s0": 0.45, "kd-s1": 0.55}
    results = [RunResult(spec, _metrics(score.get(spec.name, 0.6), score.get(spec.name, 0.6) - 0.02))
               for spec in main + warm]
    table = aggregate(results, [], {"student": {"iters": 2}}, "cmd", "c", warm_iters=3)
    assert table["warm_start"]["start_seeds"] == [0]
    assert table["warm_start"]["start_mean"] == pytest.approx(0.40)  # baseline-s0 alone (the mean would be 0.45)
    assert table["warm_start"]["start_val_mean"] == pytest.approx(0.38)
    md = format_markdown({**table, "protocol": _protocol()})
    assert "The baseline students it starts from (seed 0) scored 40.0 test mIoU." in md
    assert "| kd | 50.0 ± 7.1 | 45.0, 55.0 |" in md  # the main table's per-seed column beside it


def test_a_val_only_study_shows_its_budgets_and_warm_start_on_val(tmp_path):
    from lix_train.study.plots import plot_budgets, plot_warm_start

    table = aggregate(_made_up_study(val_only=True), [], {"student": {"iters": 2}}, "cmd --eval.score_test false",
                      "c", budgets=[1, 4], warm_iters=3)
    assert table["val_only"] and table["warm_start"]["start_val_mean"] == pytest.approx(0.385)
    md = format_markdown({**table, "protocol": _protocol()})
    budgets = md.split("## Student iteration budgets", 1)[1].split("## Warm start", 1)[0]
    assert "| model | 1 val | 2 val | 4 val |" in budgets and "test" not in budgets
    assert "| teacher | 60.0 | 60.0 | 60.0 |" in budgets and "| kd | 38.5 ± 0.7 | 43.5 ± 0.7 | 48.5 ± 0.7 |" in budgets
    warm = md.split("## Warm start: 3 more iterations from the baseline students", 1)[1]
    assert "(seeds 0, 1) scored 38.5 val mIoU" in warm
    assert "| model | val mIoU | per seed | vs baseline | gap closed |" in warm
    assert "| kd | 45.5 ± 0.7 | 45.0, 46.0 | +5.0 | 26 % |" in warm  # against the warm baseline's 40.5, teacher 60
    assert plot_warm_start(table, tmp_path / "warm.png").read_bytes()[:8] == PNG
    assert plot_budgets(table, tmp_path / "budgets.png").read_bytes()[:8] == PNG  # the val panel alone


def test_budget_and_warm_start_plots_are_pngs(tmp_path):
    from lix_train.study.plots import plot_budgets, plot_warm_start

    table = aggregate(_made_up_study(), [], {"student": {"iters": 2}}, "cmd", "c", budgets=[1, 4], warm_iters=3)
    assert plot_budgets(table, tmp_path / "budgets.png").read_bytes()[:8] == PNG
    assert plot_warm_start(table, tmp_path / "warm.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no finished budget runs"):
        plot_budgets({"budgets": {"rows": []}}, tmp_path / "none.png")


def test_line_styles_tell_a_dozen_rows_apart_and_pair_each_x_zeros_twin_with_its_method():
    from lix_train.study.plots import row_styles

    methods = ["baseline", "kd", "dkd", "cwd", "at", "dwld", "arfd", "lix", "mgd", "aux_x", "halluc",
               "lix_xzeros", "cwd_xzeros", "baseline_wide"]
    styles = row_styles(methods)
    own = [m for m in methods if not m.startswith("baseline") and not m.endswith("_xzeros")]
    assert len({styles[m]["color"] for m in own}) == len(own) == 10  # ten methods, ten colours
    assert all(styles[m]["color"] not in ("tab:gray", "tab:green") for m in own)  # the baselines', the teacher's
    assert styles["baseline"]["color"] == "tab:gray" and styles["baseline_wide"]["linestyle"] != "-"
    for twin in ("lix_xzeros", "cwd_xzeros"):
        parent = styles[twin.removesuffix("_xzeros")]
        assert styles[twin]["color"] == parent["color"] and styles[twin]["marker"] == parent["marker"]
        assert styles[twin]["linestyle"] == "--" and styles[twin]["markerfacecolor"] == "none"
    assert row_styles(["kd_xzeros"])["kd_xzeros"]["linestyle"] == "-"  # no kd row: a method of its own
    many = row_styles([f"m{i}" for i in range(70)])
    assert len({(s["color"], s["marker"]) for s in many.values()}) == 70


def test_class_gains_are_a_heat_map_on_the_students_scale(tmp_path):
    from lix_train.study.plots import plot_class_gains

    table = aggregate(_made_up_study(), [], {"student": {"iters": 2}}, "cmd", "c")
    assert table["teacher"]["per_class_gain"] and all(m["per_class_gain"] for m in table["methods"][1:])
    assert plot_class_gains(table, tmp_path / "gains.png").read_bytes()[:8] == PNG
    unfinished = {**table, "methods": [*table["methods"], {"method": "mgd", "per_class_gain": {
        name: None for name in table["teacher"]["per_class_gain"]}}]}
    assert plot_class_gains(unfinished, tmp_path / "gains2.png").read_bytes()[:8] == PNG  # its row drawn as '-'
    with pytest.raises(ValueError, match="no per-class gains"):
        plot_class_gains({"teacher": None, "methods": []}, tmp_path / "none.png")


def test_tuning_table_is_val_only_and_best_first():
    specs = tuning.expand_tuning(["kd"], [0, 1])
    val = {"temperature1-lambda_l0.5": 0.30, "temperature4-lambda_l2": 0.50}
    results = [RunResult(s, _metrics(None, val.get(s.variant, 0.4) + 0.01 * s.seed)) for s in specs]
    table = aggregate_tuning(results, {}, "python -m lix_train.compare --tune kd", "c")
    rows = table["methods"]["kd"]["rows"]
    assert rows[0]["point"] == "temperature4-lambda_l2" and rows[-1]["point"] == "temperature1-lambda_l0.5"
    assert table["methods"]["kd"]["best"] == {"distill.kd.temperature": 4.0, "distill.lambda_l": 2.0}
    assert table["teacher_val_miou"] == 0.6 and table["split"] == "val"
    md = format_tuning(table)
    assert "`kd: {distill.kd.temperature: 4.0, distill.lambda_l: 2.0}`" in md and "test" not in md.split("\n## ")[1]
    assert "Reference: the labels-only baseline" in md and "| vs baseline |" in md and "## baseline" not in md
    first_kd = next(i for i, spec in enumerate(specs) if spec.method == "kd")
    results[first_kd] = RunResult(specs[first_kd], None)
    assert aggregate_tuning(results, {}, "c", "c")["methods"]["kd"]["best"] is None  # unfinished: choose later


def test_a_val_only_study_shows_val_scores_in_the_main_columns():
    from lix_train.study.ablations import ABLATIONS

    specs = expand(["baseline", "lix"], [0, 1], [ABLATIONS["balance"]])
    val = {"baseline": 0.40, "lix": 0.38, "cap1": 0.44}
    results = [RunResult(s, _metrics(None, val.get(s.variant, val[s.label]) + 0.01 * s.seed, teacher=0.60))
               for s in specs]
    table = aggregate(results, [ABLATIONS["balance"]], _protocol(), "cmd --eval.score_test false", "c")
    assert table["val_only"] and table["teacher_val_miou"] == 0.60
    md = format_markdown(table)
    assert "# LIX-Seg comparison on val" in md and "the test split is never read" in md and "test split:" not in md
    assert "| teacher (RGB+normals) | 60.0 | - | +19.5 | 100 % |" in md
    assert "| lix | 38.5 ± 0.7 | 38.0, 39.0 | -2.0 | -10 % |" in md
    assert "| cap1 | 44.5 ± 0.7 | 44.0, 45.0 | +4.0 | 21 % |" in md
    tested = aggregate(_made_up_study(), [], {"student": {"iters": 2}}, "cmd", "c")
    assert not tested["val_only"]  # a study that read test keeps the test columns


def _protocol() -> dict:
    net = {"encoder": "resnet18", "width": 0.25, "decoder_channels": 64, "iters": 2, "batch_size": 8,
           "optimizer": "adamw", "lr": 0.003, "fusion": "intermediate"}
    return {"preset": "quick", "dataset": "synthetic", "data_root": "x", "modality": "normals",
            "resolution": [96, 320], "eval_mode": "whole", "seeds": [0, 1], "teacher_seed": 0,
            "teacher": net, "student": net}


# --- one tiny real study with every track, and one tiny tuning grid --------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_experiment):
    return tiny_experiment("tracks", ITERS, quiet=True)


def _load(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "metrics.json").read_text())


def test_a_study_with_budgets_warm_start_and_lix_xzeros(tiny, capsys):
    base, config = tiny
    out, copy = base / "study", base / "elsewhere" / "results.json"
    argv = ["--preset", "quick", "--config", str(config), "--seeds", "1", "--methods", "baseline,kd,lix_xzeros",
            "--budgets", "2,3", "--warm-start", "1", "--out", str(out), "--results-json", str(copy)]
    assert compare.main([*argv, "--only-budget", "3"]) == 0  # a study in steps: one budget first
    assert all((out / "runs" / n / "metrics.json").is_file() for n in ("kd-i3-s0", "lix_xzeros-i3-s0", "control-zero_x"))
    assert not any((out / "runs" / n).exists() for n in ("kd-s0", "baseline-s0", "warm-kd-s0"))
    assert "kd-s0" in json.loads((out / "table.json").read_text())["missing"]
    assert compare.main(argv) == 0  # the same command without it trains the rest
    names = ["baseline-s0", "kd-s0", "lix_xzeros-s0", "baseline-i3-s0", "kd-i3-s0", "lix_xzeros-i3-s0",
             "warm-baseline-s0", "warm-kd-s0", "warm-lix_xzeros-s0", "control-zero_x"]
    assert all((out / "runs" / n / "metrics.json").is_file() for n in names)
    assert not (out / "runs" / "baseline-i2-s0").exists()  # the preset's budget is the main run
    assert [int(r["iteration"]) for r in read_csv(out / "runs" / "kd-i3-s0" / "train.csv")] == [1, 2, 3]
    warm = _load(out, "warm-kd-s0")
    assert warm["init_from"] == str(out / "runs" / "baseline-s0" / "student.pt")
    assert [int(r["iteration"]) for r in read_csv(out / "runs" / "warm-kd-s0" / "train.csv")] == [1]
    # lix_xzeros learns from the control's X = zeros teacher
    assert Path(_load(out, "lix_xzeros-s0")["teacher"]["checkpoint"]).parent == \
        Path(_load(out, "control-zero_x")["teacher_dir"])

    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["methods"]] == ["baseline", "kd", "lix_xzeros"]
    kd = next(r for r in table["budgets"]["rows"] if r["method"] == "kd")
    assert kd["by_budget"]["2"]["miou"] == [_load(out, "kd-s0")["student"]["miou"]]
    assert kd["by_budget"]["3"]["miou"] == [_load(out, "kd-i3-s0")["student"]["miou"]]
    results = json.loads((out / "results.json").read_text())
    assert json.loads(copy.read_text()) == results
    assert results["default_method"] == DistillConfig().method  # the package's default, whichever it is
    assert results["teacher"] == pytest.approx(100 * _load(out, "baseline-s0")["teacher"]["miou"], abs=1e-3)
    assert results["methods"]["lix_xzeros"]["test"] == [pytest.approx(100 * _load(out, "lix_xzeros-s0")["student"]
                                                                      ["miou"], abs=1e-3)]
    assert set(results["budgets"]) == {"2", "3"} and set(results["warm_start"]["methods"]) == {
        "baseline", "kd", "lix_xzeros"}
    assert results["protocol"]["command"].startswith("python -m lix_train.compare")
    for plot in ("budgets", "warm_start"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:8] == PNG
    md = (out / "table.md").read_text()
    assert "## Student iteration budgets" in md and "## Warm start" in md and "lix_xzeros" in md

    capsys.readouterr()
    assert compare.main(argv) == 0
    assert "0 to do" in capsys.readouterr().out

    # a warm start from weights of another network is refused before any work, naming the file
    from lix_train import distill

    teacher = Path(_load(out, "baseline-s0")["teacher"]["checkpoint"])
    assert distill.main(["--config", str(config), "--student.train.init_from", str(teacher), "--run-dir",
                         str(base / "wrong")]) == 2
    err = capsys.readouterr().err
    assert f"{teacher}: student.train.init_from: architecture / class-count mismatch" in err


def test_tuning_never_scores_test_and_names_what_to_copy(tiny, capsys, monkeypatch):
    base, config = tiny
    out = base / "tuning"
    monkeypatch.setitem(tuning.GRIDS, "kd", {"distill.lambda_l": (0.5, 2.0)})
    capsys.readouterr()
    argv = ["--preset", "quick", "--config", str(config), "--seeds", "1", "--tune", "kd", "--out", str(out)]
    assert compare.main(argv) == 0
    said = capsys.readouterr().out
    for name in ("tune-kd-lambda_l0.5-s0", "tune-kd-lambda_l2-s0"):
        metrics = _load(out, name)
        assert metrics["split"] == "val" and "student" not in metrics and "teacher" not in metrics
        assert "test_frames" not in metrics and metrics["val_frames"] == 3
        assert 0 <= metrics["student_val"]["miou"] <= 1 and metrics["teacher_val"]["checkpoint"]
    table = json.loads((out / "tuning.json").read_text())
    rows = table["methods"]["kd"]["rows"]
    assert rows[0]["val_mean"] >= rows[1]["val_mean"]
    assert table["methods"]["kd"]["best"] == rows[0]["overrides"]
    assert "copy into lix_train/study/tuned.yaml" in said and "test mIoU" not in said
    assert not (out / "table.md").exists() and not (out / "results.json").exists()
    # a main-table run must not take a val-only result for its own: the same config, scored on test
    assert not is_finished(out / "runs" / "tune-kd-lambda_l0.5-s0", needs_test=True)

    # ... but it need not train again: the twin's final checkpoint seeds its folder and it only scores
    main = ["--preset", "quick", "--config", str(config), "--seeds", "1", "--methods", "baseline,kd", "--no-control",
            "--distill.lambda_l", "2.0", "--out", str(out)]
    assert compare.main([*main, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "to score (trained in tune-kd-lambda_l2-s0)" in said and "to score (trained in tune-baseline-s0)" in said
    tuned_weights = torch.load(out / "runs" / "tune-kd-lambda_l2-s0" / "student.pt", weights_only=False)["model"]
    assert compare.main(main) == 0
    said = capsys.readouterr().out
    assert "2 of them trained earlier by an identical run: only scored here" in said
    scored, twin = _load(out, "kd-s0"), _load(out, "tune-kd-lambda_l2-s0")
    assert scored["split"] == "test" and 0 <= scored["student"]["miou"] <= 1
    assert scored["student_val"]["miou"] == twin["student_val"]["miou"]  # the same network
    weights = torch.load(out / "runs" / "kd-s0" / "student.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], tuned_weights[k]) for k in tuned_weights)
    assert (out / "runs" / "kd-s0" / "train.csv").read_text() == \
        (out / "runs" / "tune-kd-lambda_l2-s0" / "train.csv").read_text()  # no iteration trained again
    assert _load(out, "tune-kd-lambda_l2-s0") == twin and twin["split"] == "val"  # the twin is left as it was


# --- the GPU study script ------------------------------------------------------------------------------

def _dry_run(script: Path, env: dict) -> subprocess.CompletedProcess:
    """A study script planned, not run (its --dry-run goes on to every compare command it runs)."""
    return subprocess.run(["bash", str(script), "--dry-run"], env=env, capture_output=True, text=True, timeout=300)


def test_gpu_study_script_parses_and_plans_on_cpu(tmp_path):
    script = ROOT / "benchmarks" / "gpu_study.sh"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "gpu")}
    done = _dry_run(script, env)
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "6 runs, 1 teacher config(s)" in said
    for name in ("baseline-s0", "cwd-s0", "lix-s0", "baseline-i500-s0", "cwd-i500-s0", "lix-i500-s0"):
        assert name in said
    command = shlex.split(next(line for line in said.splitlines() if line.startswith("+ "))[2:])
    assert command[1:3] == ["-m", "lix_train.compare"]
    args = compare.build_parser().parse_args(command[3:])
    setup = StudySetup(preset=args.preset, out=args.out, overrides=compare.study_overrides(args))
    cfg = resolve_base(setup)
    assert cfg.teacher.model.width == cfg.student.model.width == 1.0
    assert tuple(cfg.data.transforms.size) == tuple(cfg.data.transforms.crop_size) == (192, 640)
    for role in (cfg.teacher.train, cfg.student.train):
        assert role.amp and role.device == "cuda" and role.batch_size == 16
    # protocol v2 in training samples at twice the CPU preset's batch: the converged teacher, two budgets
    v2 = resolve_base(StudySetup(preset="synthetic", out=args.out))
    assert cfg.teacher.train.iters * 16 == v2.teacher.train.iters * v2.teacher.train.batch_size
    assert cfg.student.train.iters * 16 == v2.student.train.iters * v2.student.train.batch_size
    assert compare.parse_budgets(args.budgets) == [500, cfg.student.train.iters]
    assert args.seeds == 1 and args.jobs >= 1
    header = script.read_text().split("set -euo")[0]
    assert "9-minute" in header and "GFLOP" in header  # how the time was estimated


def test_a_warm_start_from_a_finished_run_without_weights_fails_before_any_training(tmp_path, monkeypatch):
    """A study restored from an archive keeps the baseline's scores, not its student.pt unless asked: the warm
    start must say so before training starts, not after the hours of training before it; the scores alone still
    plan and report."""
    init = tmp_path / "runs" / "baseline-s0" / "student.pt"
    specs = expand(["baseline", "kd"], [0]) + expand_warm_start(["kd"], [0], 40, lambda s: str(init))
    setup = StudySetup(preset="quick", out=tmp_path)
    check_start_weights(plan(specs, setup))  # the baseline not trained yet: the warm runs wait for it
    init.parent.mkdir(parents=True)
    (init.parent / "metrics.json").write_text(json.dumps({"split": "test", "student": {"miou": 0.5}}))
    planned = plan(specs, setup)  # --dry-run and --report-only plan from the scores alone
    assert planned[0].done
    monkeypatch.setattr(runner, "ensure_teachers", lambda *a: pytest.fail("nothing may start"))
    monkeypatch.setattr(runner, "check_finished_run", lambda run: None)
    with pytest.raises(UserError, match=r"warm-baseline-s0 starts from .*baseline-s0/student.pt, which is missing "
                                        r"although run baseline-s0 is finished.*--keep-weights baseline-s0"):
        runner.execute(planned, setup, say=lambda line: None)
    init.write_bytes(b"weights")
    check_start_weights(planned)  # with its weights back, the same plan goes on


# --- the CPU study script ------------------------------------------------------------------------------

def _said_commands(said: str) -> list:
    return [compare.build_parser().parse_args(shlex.split(line[2:])[3:]) for line in said.splitlines()
            if line.startswith("+ ")]


def test_cpu_study_script_plans_the_archived_study_then_the_check_at_8000(tmp_path):
    script = ROOT / "benchmarks" / "cpu_study_v2.sh"
    env = {**os.environ, "PYTHON": sys.executable, "ARCHIVE": "", "STUDY_COMMIT": "", "OUT": str(tmp_path / "v2"),
           "CHECK_OUT": str(tmp_path / "v2-8000")}
    done = _dry_run(script, env)
    assert done.returncode == 1 and "table.json is missing" in done.stderr  # no val choice before the table
    study = _said_commands(done.stdout)[0]
    archived = json.loads((ROOT / "docs" / "studies" / "v2" / "tune" / "table.json").read_text())
    published = compare.build_parser().parse_args(shlex.split(archived["command"])[3:])
    for option in ("methods", "one_seed"):  # the same study as the one archived, in any order
        assert set(getattr(study, option).split(",")) == set(getattr(published, option).split(","))
    for option in ("preset", "seeds", "budgets", "warm_start", "warm_seeds", "control_seeds"):
        assert getattr(study, option) == getattr(published, option)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "table.json").write_text(json.dumps({"val_choice": None}))
    done = _dry_run(script, env)
    assert done.returncode == 1 and "has no val choice yet" in done.stderr
    (tmp_path / "v2" / "table.json").write_text(json.dumps({"val_choice": {"method": "halluc"}}))
    done = _dry_run(script, env)
    assert done.returncode == 0, done.stderr
    check = _said_commands(done.stdout)[1]
    assert check.methods == "baseline,halluc" and check.seeds == 1 and check.out == tmp_path / "v2-8000"
    assert "2 runs, 1 teacher config(s)" in done.stdout
    assert "--no-control --student.train.iters 8000" in [line for line in done.stdout.splitlines()
                                                        if line.startswith("+ ")][1]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git history (a worktree)")
def test_cpu_study_script_trains_from_a_worktree_at_the_study_commit(tmp_path):
    clone = tmp_path / "clone"  # a clone, so that the worktree is registered there, not in this checkout
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True, timeout=300)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (clone / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "cpu_study_v2.sh", clone / "benchmarks")  # the script as it is here
    env = {**os.environ, "PYTHON": sys.executable, "ARCHIVE": "", "STUDY_COMMIT": head,
           "WORKTREE": str(tmp_path / "wt"), "OUT": "runs/compare/v2"}
    done = _dry_run(clone / "benchmarks" / "cpu_study_v2.sh", env)
    assert f"training from {tmp_path / 'wt'} at {head}" in done.stdout, done.stderr
    assert (tmp_path / "wt" / "runs").resolve() == (clone / "runs").resolve()  # one runs/ for both
    assert "84 runs" in done.stdout and done.returncode == 1  # planned from the worktree; no table yet
