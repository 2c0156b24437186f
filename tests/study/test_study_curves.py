"""Validation curves of several runs (is a budget converged?): the table, the figure, the errors."""

from __future__ import annotations

import json

import pytest

from lix_train.study import curves


def _run(path, rows, final=None, teacher=False):
    path.mkdir(parents=True)
    (path / "eval.csv").write_text("iteration,miou,pixel_acc\n" + "".join(f"{i},{m},0.9\n" for i, m in rows))
    if final is not None:
        name, key = ("teacher.json", "val") if teacher else ("metrics.json", "student_val")
        (path / name).write_text(json.dumps({key: {"miou": final}}))
    return path


def test_curves_table_figure_and_final_points(tmp_path, capsys):
    teacher = _run(tmp_path / "t", [(500, 0.4), (1000, 0.6)], 0.6, teacher=True)
    student = _run(tmp_path / "s", [(500, 0.3), (1000, 0.45), (1500, 0.5)])
    short = _run(tmp_path / "short", [(1000, 0.41)], 0.41)
    png = tmp_path / "c.png"
    assert curves.main(["--run", f"teacher={teacher}", "--run", f"baseline={student}",
                        "--final", f"baseline=1000:{short}", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| iteration | teacher | baseline |" in out
    assert "| 1000 | 60.0 | 45.0 |" in out and "| 1500 |  | 50.0 |" in out
    assert "final val of baseline trained 1000 iterations: 41.0" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves.final_val(teacher) == 0.6


@pytest.mark.parametrize("argv, message", [
    (["--run", "x"], "expected LABEL=VALUE"),
    (["--run", "a={empty}"], "no validation rows"),
    (["--run", "a={good}", "--final", "b=10:{good}"], "LABEL one of --run's"),
    (["--run", "a={good}", "--final", "a=10:{empty}"], "no final val score"),
])
def test_bad_requests_end_in_one_line(tmp_path, capsys, argv, message):
    good = _run(tmp_path / "good", [(1, 0.5)])
    (tmp_path / "empty").mkdir()
    argv = [a.format(good=good, empty=tmp_path / "empty") for a in argv]
    assert curves.main(argv) == 2
    assert message in capsys.readouterr().err
