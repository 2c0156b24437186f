"""Per-class val IoU of runs side by side (python -m lix_train.study.class_val): table, means, errors."""

from __future__ import annotations

import json

import pytest

from lix_train.study import class_val


def _run(path, per_class, teacher=False):
    path.mkdir(parents=True)
    name, key = ("teacher.json", "val") if teacher else ("metrics.json", "student_val")
    scored = [v for v in per_class.values() if v is not None]
    (path / name).write_text(json.dumps({key: {"miou": sum(scored) / len(scored), "per_class_iou": per_class}}))
    return path


def test_the_reference_against_the_mean_of_several_seeds(tmp_path, capsys):
    teacher = _run(tmp_path / "t", {"Road": 0.9, "Pole": 0.5, "GuardRail": None}, teacher=True)
    s0 = _run(tmp_path / "s0", {"Road": 0.8, "Pole": 0.2, "GuardRail": 0.1})
    s1 = _run(tmp_path / "s1", {"Road": 0.9, "Pole": 0.3, "GuardRail": 0.3})
    assert class_val.main(["--run", f"teacher={teacher}", "--run", f"student={s0},{s1}"]) == 0
    out = capsys.readouterr().out
    assert "| class | teacher | student (2 runs) | teacher - student |" in out
    assert "| Road | 90.0 | 85.0 ± 7.1 | +5.0 |" in out and "| Pole | 50.0 | 25.0 ± 7.1 | +25.0 |" in out
    assert "| GuardRail | - | 20.0 ± 14.1 | - |" in out  # a class one side never scored: no difference
    assert "| mIoU | 70.0 | 55.0 ± 7.1 | +15.0 |" in out  # each run's mean over the classes every column scored


def test_a_student_run_reads_student_val_not_test(tmp_path):
    run = _run(tmp_path / "s", {"Road": 0.5})
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["student"] = {"miou": 0.99, "per_class_iou": {"Road": 0.99}}  # the test score: never read
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert class_val.class_ious([run]) == {"Road": [0.5]}


@pytest.mark.parametrize("argv, message", [
    (["--run", "a={a}"], "at least two"),
    (["--run", "a={a}", "--run", "a={b}"], "given twice"),
    (["--run", "a={a}", "--run", "b={empty}"], "no final val score"),
    (["--run", "a={a}", "--run", "b={other}"], "different class sets"),
    (["--run", "a={a}", "--run", "b={a},{other}"], "different class sets"),
    (["--run", "a={a}", "--run", "b={nocls}"], "no per_class_iou"),
])
def test_bad_requests_end_in_one_line(tmp_path, capsys, argv, message):
    dirs = {"a": _run(tmp_path / "a", {"Road": 0.5}), "b": _run(tmp_path / "b", {"Road": 0.4}),
            "other": _run(tmp_path / "o", {"Sky": 0.5}), "empty": tmp_path / "e", "nocls": tmp_path / "n"}
    dirs["empty"].mkdir()
    dirs["nocls"].mkdir()
    (dirs["nocls"] / "metrics.json").write_text(json.dumps({"student_val": {"miou": 0.5}}))
    assert class_val.main([a.format(**dirs) for a in argv]) == 2
    assert message in capsys.readouterr().err
