"""Validation curves of finished or running trainings: is a budget converged?

Reads each run folder's eval.csv (val mIoU every `train.eval_every` iterations) and prints one
table, iterations down, runs across; with --out it also draws them (engine.plots.plot_val_curves).
`--final LABEL=BUDGET:DIR` adds the final val score of a run trained with another budget, as a
hollow marker on LABEL's curve: a poly schedule ends every run with a flat stretch, so a curve
that flattens inside one run says less than the end points of runs at 2x the budget.

    python -m lix_train.study.curves --run teacher=runs/teachers/3af1576af9d3 \\
        --run baseline=runs/explore/baseline-i8000-s0 --out docs/images/v2_convergence.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lix_train.cli import UserError, run_cli
from lix_common.cli import doc_parser
from lix_train.engine.logging import read_csv

PROG = "python -m lix_train.study.curves"


def labelled(text: str, flag: str) -> tuple[str, str]:
    """LABEL=VALUE of a command-line option (`flag` names it in the error)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise UserError(f"{flag} {text!r}: expected LABEL=VALUE")
    return label, rest


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """[(iteration, val mIoU)] from RUN/eval.csv; a clear error when there is none."""
    rows = read_csv(run_dir / "eval.csv")
    if not rows:
        raise UserError(f"{run_dir / 'eval.csv'}: no validation rows (was the run trained with train.eval_every > 0?)")
    try:
        return [(int(r["iteration"]), float(r["miou"])) for r in rows]
    except (KeyError, ValueError) as err:
        raise UserError(f"{run_dir / 'eval.csv'}: not an eval log ({err})") from None


def final_val_scores(run_dir: Path) -> dict:
    """A finished run's final val scores (miou, per_class_iou, ...): distill's metrics.json student_val,
    or a teacher's teacher.json val."""
    for name, key in (("metrics.json", "student_val"), ("teacher.json", "val")):
        path = run_dir / name
        if path.is_file():
            scores = json.loads(path.read_text()).get(key) or {}
            if scores.get("miou") is not None:
                return scores
    raise UserError(f"{run_dir}: no final val score (metrics.json student_val or teacher.json val)")


def final_val(run_dir: Path) -> float:
    """A finished run's final val mIoU (distill's student_val; a teacher's teacher.json val)."""
    return float(final_val_scores(run_dir)["miou"])


def format_curves(curves: dict[str, list[tuple[int, float]]], finals: dict[str, list[tuple[int, float]]]) -> str:
    """Markdown: val mIoU (%) per iteration for every run, then the end points of other budgets."""
    iters = sorted({i for points in curves.values() for i, _ in points})
    lines = ["| iteration | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for it in iters:
        cells = [next((f"{100 * v:.1f}" for i, v in points if i == it), "") for points in curves.values()]
        lines.append(f"| {it} | " + " | ".join(cells) + " |")
    for label, ends in finals.items():
        for budget, value in sorted(ends):
            lines.append(f"\nfinal val of {label} trained {budget} iterations: {100 * value:.1f}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser(PROG, __doc__)
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR",
                        help="a run folder with an eval.csv (a student run, or a teacher in the store)")
    parser.add_argument("--final", action="append", default=[], metavar="LABEL=BUDGET:DIR",
                        help="the final val score of a run trained BUDGET iterations, drawn on LABEL's curve")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.png", help="also draw the curves here")
    parser.add_argument("--title", default=None, help="the figure's title")
    return parser


def run(args: argparse.Namespace) -> int:
    curves = {}
    for text in args.run:
        label, folder = labelled(text, "--run")
        curves[label] = read_curve(Path(folder))
    finals: dict[str, list[tuple[int, float]]] = {}
    for text in args.final:
        label, rest = labelled(text, "--final")
        budget, sep, folder = rest.partition(":")
        if label not in curves or not sep or not budget.isdigit():
            raise UserError(f"--final {text!r}: expected LABEL=BUDGET:DIR with LABEL one of --run's ({', '.join(curves)})")
        finals.setdefault(label, []).append((int(budget), final_val(Path(folder))))
    print(format_curves(curves, finals), end="")
    if args.out is not None:
        from lix_train.engine.plots import plot_val_curves

        print(f"figure: {plot_val_curves(curves, args.out, finals, args.title)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
