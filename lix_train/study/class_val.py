"""Per-class val IoU of finished runs side by side: where one model's lead over another lies.

Each `--run LABEL=DIR[,DIR...]` is a column: the final val per-class IoU of its folders (a student run's
metrics.json student_val, a teacher's teacher.json val), mean ± sample std over them when there are several
(seeds). The first run is the reference; a last column per other run gives reference minus it. Val only,
by design: it says where to look next (e.g. which classes the X input gives the teacher, against the
X = zeros control teacher) without reading the test split.

    python -m lix_train.study.class_val --run normals=runs/teachers/3af1576af9d3 \\
        --run zeros=runs/teachers/02392fdc20dc,runs/teachers/065f84c2ff10,runs/teachers/ace4ddc6b1db
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lix_common.cli import doc_parser
from lix_train.cli import UserError, run_cli
from lix_train.study.curves import final_val_scores, labelled
from lix_train.study.table import mean_std

PROG = "python -m lix_train.study.class_val"


def class_ious(run_dirs: list[Path]) -> dict[str, list[float] | None]:
    """{class: its final val IoU in each run}; None where a run has no IoU for the class (absent from val)."""
    per_run = []
    for run_dir in run_dirs:
        scores = final_val_scores(run_dir).get("per_class_iou")
        if not scores:
            raise UserError(f"{run_dir}: its final val score has no per_class_iou")
        per_run.append(scores)
    classes = list(per_run[0])
    if any(list(scores) != classes for scores in per_run[1:]):
        raise UserError(f"{', '.join(map(str, run_dirs))}: the runs score different class sets")
    return {c: None if any(s[c] is None for s in per_run) else [float(s[c]) for s in per_run] for c in classes}


def format_class_val(columns: dict[str, dict[str, list[float] | None]]) -> str:
    """Markdown: a row per class, then mIoU over the classes every column scored; IoU in %, mean ± sample
    std over a column's runs (its spread says which differences its seeds can tell apart)."""
    labels = list(columns)
    reference, others = labels[0], labels[1:]
    classes = list(columns[reference])
    if any(list(col) != classes for col in columns.values()):
        raise UserError(f"--run: {', '.join(labels)} score different class sets")
    scored = [c for c in classes if all(columns[label][c] is not None for label in labels)]
    rows = {c: {label: columns[label][c] for label in labels} for c in classes}
    if scored:  # each run's mIoU over the shared classes, so the mIoU row has a spread too
        rows["mIoU"] = {label: [sum(columns[label][c][i] for c in scored) / len(scored)
                                for i in range(len(columns[label][scored[0]]))] for label in labels}

    def cell(values: list[float] | None) -> str:
        mean, std = mean_std(values or [])
        return "-" if mean is None else f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")

    def diff(a: list[float] | None, b: list[float] | None) -> str:
        return "-" if a is None or b is None else f"{100 * (mean_std(a)[0] - mean_std(b)[0]):+.1f}"

    sizes = {label: len(next(v for v in columns[label].values() if v is not None)) for label in labels}
    heads = [f"{label} ({sizes[label]} runs)" if sizes[label] > 1 else label for label in labels]
    heads += [f"{reference} - {other}" for other in others]
    lines = ["| class | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join([*(cell(row[label]) for label in labels),
                                                   *(diff(row[reference], row[o]) for o in others)]) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser(PROG, __doc__)
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR[,DIR...]",
                        help="finished run folders (several: averaged); the first --run is the reference")
    return parser


def run(args: argparse.Namespace) -> int:
    columns = {}
    for text in args.run:
        label, folders = labelled(text, "--run")
        if label in columns:
            raise UserError(f"--run {text!r}: the label {label!r} is given twice")
        columns[label] = class_ious([Path(f) for f in folders.split(",") if f])
    if len(columns) < 2:
        raise UserError("--run: give at least two (the first is the reference the others are compared with)")
    print(format_class_val(columns), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
