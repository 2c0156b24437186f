"""The study harness: ablation expansion and planning (no training), the table's arithmetic, and
one tiny real study (2 methods x 2 seeds + the X = zeros control on a generated set) that must
write its tables and plots, share one teacher, and skip or resume its runs when called again."""

from __future__ import annotations

import json
import pickle
import re
import statistics
from pathlib import Path

import pytest

from cli_fixtures import tiny_config
from lix_train import compare
from lix_train.config import from_dict, read_yaml
from lix_train.engine.logging import read_csv
from lix_train.experiment import ExperimentConfig
from lix_train.study import ablations
from lix_train.study.grid import expand, nest
from lix_train.report import METRICS_FILE
from lix_train.study.planning import RUNS_DIR, StudySetup, plan
from lix_train.study.table import class_gains, gap_share, geometry_classes, mean_std
from repo_paths import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
ITERS = 2
METHODS = ["baseline", "kd"]
SEEDS = [0, 1]


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# --- expansion and planning, no training ---------------------------------------------------------

def test_every_ablation_variant_is_a_valid_config_that_sets_its_axis():
    for ablation in ablations.ABLATIONS.values():
        for variant in ablation.variants:
            cfg = from_dict(ExperimentConfig, nest({**variant.overrides, "distill.method": ablation.method}))
            for key, value in variant.overrides.items():
                got = _get(cfg, key)
                assert (tuple(got) if isinstance(got, (list, tuple)) else got) == value, (ablation.name, key)


def test_the_issue_axes_are_all_there():
    sets = ablations.ABLATIONS
    assert [v.overrides["distill.dwld.layers"] for v in sets["dwc_depth"].variants] == [1, 3, 5]
    assert {v.label for v in sets["dwc_mode"].variants} == {"fixed", "adversarial", "confidence", "cooperative"}
    assert {v.label for v in sets["recal_kernel"].variants} == {"laplace", "gaussian", "none"}
    assert {v.label for v in sets["recal_mode"].variants} == {"channel", "token"}
    assert {v.label for v in sets["feature_loss"].variants} == {"cka", "mse"}
    assert {v.label for v in sets["fusion"].variants} == {"intermediate", "late"}
    assert {"normals", "depth"} <= {v.label for v in sets["x_modality"].variants}
    assert sets["fusion"].changes_teacher and sets["x_modality"].changes_teacher
    assert sets["control"].variants[0].teacher_only and sets["control"].variants[0].overrides == {"data.zero_x": True}
    assert ablations.select(["all"]) == list(sets.values())
    with pytest.raises(ValueError, match="unknown ablation 'dwc'.*dwc_depth"):
        ablations.select(["dwc"])


def test_the_readme_names_every_ablation_set():
    """The README's `--ablation NAME` list is how users find the sets: a new set must join it."""
    readme = (ROOT / "README.md").read_text()
    listing = readme.split("(`--ablation NAME`", 1)[1].split("What the first study found", 1)[0]
    named = set(re.findall(r"`([a-z_0-9]+)`", listing))
    assert set(ablations.ABLATIONS) <= named, sorted(set(ablations.ABLATIONS) - named)


def test_expand_crosses_methods_seeds_and_variants():
    chosen = ablations.select(["dwc_mode", "control"])
    specs = expand(["baseline", "lix"], [0, 1, 2], chosen)
    names = [s.name for s in specs]
    assert names[:6] == ["baseline-s0", "baseline-s1", "baseline-s2", "lix-s0", "lix-s1", "lix-s2"]
    assert len(specs) == 2 * 3 + 4 * 3 + 1  # methods x seeds, dwc_mode variants x seeds, the control once
    fixed = [s for s in specs if s.group == "dwc_mode" and s.variant == "fixed"]
    assert [s.seed for s in fixed] == [0, 1, 2]
    assert fixed[1].overrides == {"distill.dwld.mode": "fixed", "distill.method": "lix", "student.train.seed": 1}
    control = specs[-1]
    assert control.teacher_only and control.seed is None and control.name == "control-zero_x"
    for bad in ([], [0, 0], [-1]):
        with pytest.raises(ValueError):
            expand(["lix"], bad)
    with pytest.raises(ValueError, match="nothing to run"):
        expand([], [0])


def test_nest_turns_dotted_keys_into_sections():
    assert nest({"a.b.c": 1, "a.d": 2, "e": 3}) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}
    with pytest.raises(ValueError):
        nest({"a.b": 1, "a.b.c": 2})


def test_plan_shares_identical_runs_and_gives_teacher_ablations_their_own_teacher(tmp_path):
    specs = expand(["baseline", "lix"], [0], ablations.select(["dwc_mode", "dwc_depth", "fusion", "control"]))
    planned = {p.spec.name: p for p in plan(specs, StudySetup(preset="quick", out=tmp_path))}
    assert planned["dwc_mode-confidence-s0"].same_as == "lix-s0"  # the default variant is the main run
    assert planned["dwc_mode-confidence-s0"].run_dir == planned["lix-s0"].run_dir
    assert planned["fusion-intermediate-s0"].same_as == "lix-s0"
    # DWC depth varies the learned controller; its default depth is the adversarial mode's run
    assert planned["dwc_depth-3-s0"].same_as == "dwc_mode-adversarial-s0"
    assert planned["dwc_depth-1-s0"].same_as is None
    assert planned["dwc_depth-1-s0"].cfg.distill.dwld.mode == "adversarial"
    main_teacher = planned["lix-s0"].teacher_dir
    assert planned["baseline-s0"].teacher_dir == planned["dwc_depth-5-s0"].teacher_dir == main_teacher
    assert planned["fusion-late-s0"].teacher_dir != main_teacher
    assert planned["control-zero_x"].teacher_dir not in (main_teacher, planned["fusion-late-s0"].teacher_dir)
    assert planned["lix-s0"].cfg.teacher.train.seed == planned["dwc_depth-1-s0"].cfg.teacher.train.seed
    assert not any(p.done for p in planned.values())


def test_plan_serves_identical_specs_from_the_one_already_finished(tmp_path):
    """Listing an ablation before another that repeats its finished variant must not train it again."""
    finished = tmp_path / RUNS_DIR / "dwc_mode-adversarial-s0"
    finished.mkdir(parents=True)
    (finished / METRICS_FILE).write_text("{}")
    specs = expand([], [0], ablations.select(["dwc_depth", "dwc_mode"]))
    planned = {p.spec.name: p for p in plan(specs, StudySetup(preset="quick", out=tmp_path))}
    assert planned["dwc_mode-adversarial-s0"].same_as is None
    assert planned["dwc_depth-3-s0"].same_as == "dwc_mode-adversarial-s0"
    assert planned["dwc_depth-3-s0"].done


def test_plan_names_the_run_with_a_bad_option(tmp_path):
    setup = StudySetup(preset="quick", out=tmp_path, overrides={"student": {"train": {"iters": "zero"}}})
    with pytest.raises(ValueError, match=r"run baseline-s0: .*iters"):
        plan(expand(["baseline"], [0]), setup)


# --- the table's arithmetic ------------------------------------------------------------------------

def test_mean_std_is_the_sample_statistics():
    mean, std = mean_std([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.4]) == (0.4, None) and mean_std([]) == (None, None)


def test_gap_share_is_zero_at_the_baseline_and_one_at_the_teacher():
    assert gap_share(0.5, 0.5, 0.8) == 0.0
    assert gap_share(0.8, 0.5, 0.8) == pytest.approx(1.0)
    assert gap_share(0.65, 0.5, 0.8) == pytest.approx(0.5)
    assert gap_share(0.45, 0.5, 0.8) == pytest.approx(-1 / 6)
    assert gap_share(0.6, 0.5, 0.5) is None and gap_share(None, 0.5, 0.8) is None


def test_class_gains_and_geometry_classes():
    teacher = {"road": 0.9, "car": 0.8, "pole": 0.5, "sky": None}
    baseline = {"road": 0.88, "car": 0.4, "pole": 0.2, "sky": 0.9}
    assert class_gains(teacher, baseline) == pytest.approx({"road": 0.02, "car": 0.4, "pole": 0.3, "sky": None})
    assert geometry_classes(teacher, baseline, k=2) == ["car", "pole"]


# --- one tiny real study -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tiny_experiment):
    base, path = tiny_experiment("compare", ITERS, quiet=True)
    out = base / "study"
    argv = ["--preset", "quick", "--config", str(path), "--seeds", str(len(SEEDS)), "--methods", ",".join(METHODS),
            "--out", str(out)]
    assert compare.main(argv) == 0
    return base, out, argv


def _metrics(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "metrics.json").read_text())


def test_study_writes_runs_tables_and_png_plots(study):
    base, out, _ = study
    for method in METHODS:
        for seed in SEEDS:
            assert (out / "runs" / f"{method}-s{seed}" / "metrics.json").is_file()
            assert (out / "runs" / f"{method}-s{seed}" / "student.pt").is_file()
    assert (out / "runs" / "control-zero_x" / "metrics.json").is_file()
    for name in ("table.md", "table.json"):
        assert (out / name).is_file()
    for plot in ("miou_bars", "class_gains", "geometry_examples"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:8] == PNG, plot


def test_one_frozen_teacher_per_teacher_config_and_seeds_vary_only_the_student(study):
    base, out, _ = study
    teachers = sorted(p.parent for p in (base / "teachers").glob("*/teacher.pt"))
    assert len(teachers) == 2  # the RGB+X teacher and the X = zeros control
    runs = [_metrics(out, f"{m}-s{s}") for m in METHODS for s in SEEDS]
    assert len({r["teacher"]["checkpoint"] for r in runs}) == 1
    assert len({r["teacher"]["miou"] for r in runs}) == 1
    assert sum(r["teacher"]["trained_in_this_run"] for r in runs) == 0  # trained up front, then only reused
    control = _metrics(out, "control-zero_x")
    main_teacher = Path(runs[0]["teacher"]["checkpoint"]).parent
    assert Path(control["teacher_dir"]) in teachers and Path(control["teacher_dir"]) != main_teacher
    configs = [read_yaml(out / "runs" / f"kd-s{s}" / "config.yaml") for s in SEEDS]
    assert [c["student"]["train"]["seed"] for c in configs] == SEEDS
    assert configs[0]["teacher"] == configs[1]["teacher"] and configs[0]["data"] == configs[1]["data"]
    assert read_yaml(out / "runs" / "control-zero_x" / "config.yaml")["data"]["zero_x"] is True


def test_zero_x_feeds_zeros_of_the_same_shape_and_keys_the_teacher_store(study):
    from lix_train.data.build import build_datasets
    from lix_train.experiment import teacher_hash, teacher_key

    base, _, _ = study
    data = tiny_config(base / "synth", base)["data"]
    plain = from_dict(ExperimentConfig, {"data": data})
    control = from_dict(ExperimentConfig, {"data": {**data, "zero_x": True}})
    x = build_datasets(plain.data, "normals", ("test",))["test"][0]["x"]
    zero = build_datasets(control.data, "normals", ("test",))["test"]
    assert zero[0]["x"].shape == x.shape and x.abs().sum() > 0 and not zero[0]["x"].any()
    assert zero.class_set == plain.data.class_set and len(zero) == 3  # the rest is the wrapped dataset's
    assert not pickle.loads(pickle.dumps(zero))[0]["x"].any()  # what spawned loader workers receive
    assert "zero_x" not in teacher_key(plain)["data"]  # existing teachers keep their store folder
    assert teacher_hash(control) != teacher_hash(plain)


def test_table_is_computed_from_the_run_metrics(study):
    base, out, argv = study
    table = json.loads((out / "table.json").read_text())
    per_run = {m: [_metrics(out, f"{m}-s{s}")["student"] for s in SEEDS] for m in METHODS}
    teacher = _metrics(out, "baseline-s0")["teacher"]
    rows = {row["method"]: row for row in table["methods"]}
    assert list(rows) == METHODS
    for method, students in per_run.items():
        scores = [s["miou"] for s in students]
        assert rows[method]["miou"] == scores
        assert rows[method]["mean"] == pytest.approx(statistics.mean(scores))
        assert rows[method]["std"] == pytest.approx(statistics.stdev(scores))
    base_mean, kd_mean = rows["baseline"]["mean"], rows["kd"]["mean"]
    assert table["teacher"]["miou"] == teacher["miou"]
    # validation scores ride along (settings are chosen on them, never on test)
    val = [_metrics(out, f"kd-s{s}")["student_val"]["miou"] for s in SEEDS]
    assert rows["kd"]["val_miou"] == val and rows["kd"]["val_mean"] == pytest.approx(statistics.mean(val))
    assert "| val mIoU |" in (out / "table.md").read_text()
    # every run names the code it trained with; the table lists those commits
    commits = [_metrics(out, f"{m}-s{s}")["commit"] for m in METHODS for s in SEEDS]
    assert all(len(c.split("+")[0]) == 40 or c == "unknown" for c in commits)
    assert sum(table["run_commits"].values()) == len(commits) + 1  # + the control
    assert f"`{commits[0]}`" in (out / "table.md").read_text()
    if teacher["miou"] != base_mean:
        assert rows["kd"]["gap_share"] == pytest.approx((kd_mean - base_mean) / (teacher["miou"] - base_mean))
    assert rows["kd"]["delta_vs_baseline"] == pytest.approx(kd_mean - base_mean)
    for name, gain in rows["kd"]["per_class_gain"].items():
        kd = [s["per_class_iou"][name] for s in per_run["kd"] if s["per_class_iou"][name] is not None]
        bl = [s["per_class_iou"][name] for s in per_run["baseline"] if s["per_class_iou"][name] is not None]
        if kd and bl:
            assert gain == pytest.approx(statistics.mean(kd) - statistics.mean(bl)), name
        else:
            assert gain is None, name
    control = table["ablations"]["control"]["rows"][0]
    assert control["teacher_miou"] == _metrics(out, "control-zero_x")["teacher"]["miou"]
    assert table["command"] == "python -m lix_train.compare " + " ".join(argv)
    assert table["commit"] and table["protocol"]["resolution"] == [64, 192]
    assert table["protocol"]["student"]["iters"] == ITERS and table["protocol"]["seeds"] == SEEDS
    assert table["missing"] == []

    md = (out / "table.md").read_text()
    assert table["commit"] in md and "python -m lix_train.compare" in md and "64x192" in md
    assert "Seeds vary the student only" in md
    assert f"{100 * rows['kd']['mean']:.1f} ± {100 * rows['kd']['std']:.1f}" in md
    assert "X = zeros" in md and "## Per-class IoU gain over the RGB baseline" in md


def test_second_call_runs_nothing_and_an_interrupted_run_resumes(study, capsys):
    base, out, argv = study
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    capsys.readouterr()
    assert compare.main(argv) == 0
    said = capsys.readouterr().out
    assert "0 to do" in said and "compare: run " not in said and "compare: teacher " not in said
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")} == finished

    # an interrupted run: its checkpoint is there, its metrics are not -> only it runs, and it continues
    (out / "runs" / "kd-s1" / "metrics.json").unlink()
    assert compare.main(argv) == 0
    said = capsys.readouterr().out
    assert "1 to do" in said and "compare: run 1/1: kd seed 1" in said
    assert (out / "runs" / "kd-s1" / "metrics.json").is_file()
    rows = read_csv(out / "runs" / "kd-s1" / "train.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, ITERS + 1))  # resumed at the end, not retrained
    untouched = out / "runs" / "kd-s0" / "metrics.json"
    assert untouched.stat().st_mtime_ns == finished[untouched]


def test_dry_run_lists_the_runs_and_their_status(study, capsys):
    base, out, argv = study
    capsys.readouterr()
    assert compare.main([*argv, "--dry-run", "--ablation", "dwc_mode"]) == 0
    said = capsys.readouterr().out
    assert "baseline-s0" in said and "finished" in said
    assert "dwc_mode-fixed-s0" in said and "dwc_mode-adversarial-s0" in said
    assert not (out / "runs" / "dwc_mode-fixed-s0").exists()


def test_report_only_runs_nothing_and_names_the_unfinished_runs(study, capsys):
    base, out, argv = study
    assert compare.main([*argv, "--report-only", "--ablation", "dwc_mode"]) == 0
    assert not (out / "runs" / "dwc_mode-fixed-s0").exists()
    table = json.loads((out / "table.json").read_text())
    rows = {row["variant"]: row for row in table["ablations"]["dwc_mode"]["rows"]}
    assert rows["fixed"]["mean"] is None and rows["fixed"]["missing"] == ["dwc_mode-fixed-s0", "dwc_mode-fixed-s1"]
    assert "dwc_mode-fixed-s0" in table["missing"] and "Unfinished runs" in (out / "table.md").read_text()
    assert compare.main(argv) == 0  # restore the study's own table for the other tests
    assert json.loads((out / "table.json").read_text())["missing"] == []


def test_parallel_jobs_give_the_same_runs_with_one_log_each(study, capsys):
    base, out, argv = study
    parallel = base / "parallel"
    i = argv.index("--out")
    capsys.readouterr()
    assert compare.main([*argv[:i], "--out", str(parallel), "--jobs", "2"]) == 0
    said = capsys.readouterr().out
    assert "4 student runs, 2 at a time" in said and "compare: finished run kd seed 1" in said
    for method in METHODS:
        for seed in SEEDS:
            name = f"{method}-s{seed}"
            log = (parallel / "runs" / name / "train.log").read_text()
            assert "\r" not in log  # no progress bars in the logs
            # same config, same seed, same teacher: the same numbers as the one-after-another study
            assert _metrics(parallel, name)["student"]["miou"] == _metrics(out, name)["student"]["miou"]
    assert (parallel / "runs" / "control-zero_x" / "metrics.json").is_file()


def test_a_run_without_val_in_its_metrics_takes_it_from_evaluate_output(tmp_path):
    from types import SimpleNamespace

    from lix_train.evaluate import eval_file_name
    from lix_train.study.records import load_metrics

    run = SimpleNamespace(run_dir=tmp_path, cfg=SimpleNamespace(eval=SimpleNamespace(mode="whole")))
    assert load_metrics(run) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"student": {"miou": 0.5}}))
    assert "student_val" not in load_metrics(run)
    (tmp_path / eval_file_name("student", "val", "whole")).write_text(json.dumps({"split": "val", "student": {"miou": 0.4}}))
    assert load_metrics(run)["student_val"] == {"miou": 0.4}


def test_run_jobs_reports_a_failure_and_starts_nothing_after_it(tmp_path):
    from lix_train.study.parallel import Job, run_jobs

    said, ended = [], []
    jobs = [Job("bad", "no_such_module_lix", [], tmp_path / "bad.log"),
            Job("never", "platform", [], tmp_path / "never.log", lambda c, s: ended.append(c))]
    failures = run_jobs(jobs, 1, said.append, poll_s=0.05)
    assert [(f.label, f.code != 0) for f in failures] == [("bad", True)]
    assert "No module named no_such_module_lix" in (tmp_path / "bad.log").read_text()
    assert not (tmp_path / "never.log").exists() and ended == []
    ok = run_jobs([Job(f"ok{i}", "platform", [], tmp_path / f"ok{i}.log", lambda c, s: ended.append(c) or "fine")
                   for i in range(3)], 2, said.append, poll_s=0.05)
    assert ok == [] and ended == [0, 0, 0] and any(line.startswith("finished ok2 (3/3)") and "fine" in line
                                                   for line in said)


def test_a_changed_protocol_is_refused_in_the_same_folder(study, capsys):
    base, out, argv = study
    capsys.readouterr()
    assert compare.main([*argv, "--student.train.lr", "0.01"]) == 2
    assert "different config" in capsys.readouterr().err
    assert compare.main([*argv, "--distill.kd.temperature", "2"]) == 2  # KD reads T
    assert "kd-s0 holds a finished run with a different config (distill.kd.temperature)" in capsys.readouterr().err


def test_options_a_method_does_not_read_keep_its_finished_runs(study, capsys):
    base, out, argv = study
    capsys.readouterr()
    assert compare.main([*argv, "--distill.arfd.kernel", "none", "--distill.dwld.beta", "8",
                         "--distill.cwd.temperature", "3"]) == 0  # LIX-only options
    assert "0 to do" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--distill.method", "kd"], "use --methods"),
    (["--student.train.seed", "3"], "use --seeds"),
    (["--methods", "baseline,fancy"], "unknown method 'fancy'"),
    (["--ablation", "nope"], "unknown ablation 'nope'"),
    (["--seeds", "0"], "at least one seed"),
    (["--jobs", "0"], "--jobs 0: need at least one"),
])
def test_bad_requests_end_in_one_line(tmp_path, capsys, extra, message):
    assert compare.main(["--preset", "quick", "--out", str(tmp_path), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_geometry_grid_colours_stay_apart_from_each_other_and_from_the_rest():
    import numpy as np

    from lix_train.study.plots import MIN_COLOUR_DISTANCE, OTHER_GREY, distinct_colours

    vkitti_misc, terrain, almost_terrain = (80, 80, 80), (210, 0, 200), (205, 5, 195)
    near_other = tuple(c - 10 for c in OTHER_GREY)
    out = distinct_colours([vkitti_misc, terrain, almost_terrain, near_other])
    assert out[0] == vkitti_misc and out[1] == terrain  # distinct enough: kept as the dataset colours
    everything = [OTHER_GREY, *out]
    for i, a in enumerate(everything):
        for b in everything[i + 1:]:
            assert np.linalg.norm(np.subtract(a, b)) >= MIN_COLOUR_DISTANCE, (a, b)


def test_ablation_panels_draw_finished_variants_and_refuse_an_empty_table(tmp_path):
    from lix_train.study.plots import plot_ablations

    def row(variant, miou, teacher=0.6, val=None):
        return {"variant": variant, "teacher_only": False, "miou": miou, "mean": sum(miou) / len(miou),
                "val_mean": val, "teacher_miou": teacher}

    table = {"methods": [{"method": "baseline", "mean": 0.48}, {"method": "lix", "mean": 0.47}],
             "ablations": {
                 "beta": {"method": "lix", "changes_teacher": False,
                          "rows": [row("0.5", [0.49, 0.48], val=0.47), row("2.0", [0.47])]},
                 "fusion": {"method": "lix", "changes_teacher": True, "rows": [row("late", [0.46], teacher=0.58)]},
                 "control": {"method": "lix", "changes_teacher": True,
                             "rows": [{"variant": "zero_x", "teacher_only": True, "teacher_miou": 0.48}]}}}
    assert plot_ablations(table, tmp_path / "a.png").read_bytes()[:8] == PNG
    table["ablations"] = {"control": table["ablations"]["control"]}
    with pytest.raises(ValueError, match="no finished ablation runs"):
        plot_ablations(table, tmp_path / "b.png")


def test_report_only_on_an_empty_study_folder_says_so(tmp_path, capsys):
    assert compare.main(["--preset", "quick", "--out", str(tmp_path / "nothing"), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "no finished runs of this study under" in err and len(err.strip().splitlines()) == 1
