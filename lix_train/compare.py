"""The LIX study: every distillation method (and ablation) on one protocol, several seeds, one table.

    python -m lix_train.compare --preset synthetic --seeds 3                        # the full comparison
    python -m lix_train.compare --preset synthetic --seeds 3 --ablation dwc_depth fusion
    python -m lix_train.compare --preset quick --seeds 2 --methods baseline,lix \\
        --teacher.train.iters 50 --student.train.iters 50                           # a smoke test
    python -m lix_train.compare --preset synthetic --dry-run                        # list the runs

Every student run is `python -m lix_train.distill` with the study's options, in OUT/runs/<name>/;
teachers come from the shared store (one per teacher config, trained once, reused by every run
and by later studies). Rerunning the same command skips finished runs (metrics.json present)
and continues interrupted ones. The results go to OUT/table.md, OUT/table.json and OUT/plots/.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lix_train.cli import OneLineParser, UserError, available_presets, run_cli
from lix_train.config import add_config_arguments, overrides_from_args
from lix_train.distillers.config import METHODS
from lix_train.experiment import ExperimentConfig
from lix_train.study import ablations as ablation_sets
from lix_train.study.grid import BASELINE, METHOD_KEY, SEED_KEY, expand

PROG = "python -m lix_train.compare"
DEFAULT_PRESET = "synthetic"
DESCRIPTION = (
    "Compare distillation methods (and LIX ablations) on one protocol over several seeds. One frozen RGB+X "
    "teacher per teacher config is trained once in the shared teacher store and shared by every run; seeds vary "
    "the student only (student.train.seed 0..N-1; the teacher's seed stays the preset's). Every method gets the "
    "same data, schedule and test split. Each run is `python -m lix_train.distill` in OUT/runs/<name>/; rerunning "
    "skips finished runs and resumes interrupted ones. Writes OUT/table.md and OUT/table.json (mean +- std over "
    "seeds, share of the teacher gap closed = (student - baseline) / (teacher - baseline), per-class IoU gains "
    "over the RGB baseline, the command, the commit and the protocol) and OUT/plots/ (mIoU bars with per-seed "
    "points, per-class gains, one panel per ablation axis, a qualitative grid of the classes where geometry "
    "matters most). The baseline is "
    "always run (the gap needs it), and so is the control, the teacher architecture fed X = zeros, unless "
    "--no-control. The synthetic preset is the benchmark protocol (hours for 8 methods x 3 seeds on 2 CPU cores, "
    "even with --jobs 2: list the runs first with --dry-run)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        usage="%(prog)s [-h] [--preset NAME] [--config FILE] [--seeds N] [--methods A,B,...] [--ablation NAME ...] "
              "[--no-control] [--out DIR] [--jobs N] [--dry-run] [--report-only] [--isolate] [--SECTION.KEY VALUE ...]")
    parser.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                        help=f"Protocol every run starts from: {', '.join(available_presets())} "
                             "(lix_train/presets/NAME.yaml).")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML file of options applied over the preset in every run.")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="Student seeds 0..N-1 per method and ablation variant (at least 3 for reported "
                             "numbers: one-seed differences under about 1.5 mIoU mean nothing).")
    parser.add_argument("--methods", default=",".join(METHODS), metavar="A,B,...",
                        help=f"Comma-separated distillation methods, from: {', '.join(METHODS)}. The baseline is "
                             "always run (added when missing).")
    parser.add_argument("--ablation", nargs="+", action="extend", default=[], metavar="NAME",
                        help="Ablation sets to run as well (each variant x every seed, under LIX; a variant equal to "
                             "the defaults reuses the main run): " + ablation_sets.describe()
                             + f"; {ablation_sets.ALL} = every set.")
    parser.add_argument("--no-control", action="store_true",
                        help="Skip the control (the teacher architecture trained and scored on X = zeros).")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="Study folder (default: runs/compare/<preset>). The same folder continues a study.")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="Runs side by side, each in its own process with its log in its run folder "
                             "(train.log). Every run computes on one thread (runtime.threads) plus one loader "
                             "process, so N up to the number of free cores finishes about N times sooner.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Print the runs (name, status, teacher, overrides, command) and exit.")
    parser.add_argument("--report-only", action="store_true",
                        help="Run nothing: write the tables and plots from the runs finished so far.")
    parser.add_argument("--isolate", action="store_true",
                        help="Run each training in a fresh Python process (bounds memory on very long studies; "
                             "costs an interpreter and torch start-up per run).")
    add_config_arguments(parser, ExperimentConfig)
    return parser


def parse_methods(text: str) -> list[str]:
    """The --methods list, validated, with the baseline first (the gap share needs it)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    return list(dict.fromkeys([BASELINE, *methods]))


def study_overrides(args: argparse.Namespace) -> dict:
    """The --section.key options (applied to every run); the ones the study itself varies are refused."""
    overrides = overrides_from_args(args)
    for key, flag in ((METHOD_KEY, "--methods"), (SEED_KEY, "--seeds")):
        section, *rest = key.split(".")
        node = overrides.get(section, {})
        for part in rest[:-1]:
            node = node.get(part, {})
        if rest[-1] in node:
            raise UserError(f"--{key} is set by the study for each run; use {flag} instead")
    return overrides


def print_plan(planned, preset: str) -> None:
    from lix_train.study.runner import teacher_complete

    teachers = {}
    for run in planned:
        teachers.setdefault(run.teacher_dir, teacher_complete(run.teacher_dir))
    print(f"{len(planned)} runs, {len(teachers)} teacher config(s):")
    for teacher_dir, complete in teachers.items():
        print(f"  teacher {teacher_dir}: {'in the store' if complete else 'to train'}")
    if planned:
        example = next((r for r in planned if not r.spec.teacher_only), planned[0])
        print(f"each run, e.g. {example.spec.name}: {example.command(preset)}")
    for i, run in enumerate(planned, 1):
        status = f"same as {run.same_as}" if run.same_as else ("finished" if run.done else "to run")
        overrides = " ".join(f"{k}={v}" for k, v in run.spec.overrides.items())
        print(f"{i:4d}. {run.spec.name:<28} {status:<20} teacher {run.teacher_dir.name}  {overrides}")


def run(args: argparse.Namespace) -> int:
    from lix_train.config import ConfigError
    from lix_train.study.runner import StudySetup, execute, plan

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least one seed")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: need at least one")
    if args.config is not None and not args.config.is_file():
        raise UserError(f"--config {args.config}: file not found")
    if args.preset not in available_presets():
        raise UserError(f"--preset {args.preset!r}: unknown; available: {', '.join(available_presets())}")
    methods = parse_methods(args.methods)
    names = list(args.ablation) + ([] if args.no_control else [ablation_sets.CONTROL])
    try:
        chosen = ablation_sets.select(names)
        specs = expand(methods, list(range(args.seeds)), chosen)
    except ValueError as err:
        raise UserError(f"--ablation / --methods: {err}") from None
    out = args.out or Path("runs/compare") / args.preset
    setup = StudySetup(preset=args.preset, out=out, config_file=args.config, overrides=study_overrides(args),
                       isolate=args.isolate, jobs=args.jobs)
    try:
        planned = plan(specs, setup)
    except ValueError as err:  # a config error of one run: say which
        raise ConfigError(str(err)) from None
    if args.dry_run:
        print_plan(planned, args.preset)
        return 0
    if args.report_only and not any(p.done for p in planned):
        raise UserError(f"--report-only: no finished runs of this study under {out}; run it first (without "
                        "--report-only)")
    if not args.report_only:
        execute(planned, setup)
    report(planned, chosen, args, out)
    return 0


def report(planned, chosen, args: argparse.Namespace, out: Path) -> None:
    """Aggregate the finished runs into table.md / table.json and draw the study's plots."""
    from lix_train.study.plots import draw_study_plots
    from lix_train.study.runner import load_metrics
    from lix_train.report import git_commit
    from lix_train.study.table import RunResult, aggregate, protocol_of, write_tables

    results = [RunResult(p.spec, load_metrics(p)) for p in planned]
    students = [p for p in planned if not p.spec.teacher_only]
    reference = next((p for p in students if p.spec.group == "methods"), students[0] if students else planned[0])
    sample = next((r.metrics for r in results if r.metrics and "test_frames" in r.metrics), None)
    # the command that produces these runs (a --report-only redraw names the study, not itself)
    command = " ".join([PROG, *map(shlex.quote, (a for a in args.argv if a != "--report-only"))])
    protocol = protocol_of(reference.cfg, args.preset, list(range(args.seeds)), sample)
    table = aggregate(results, chosen, protocol, command, git_commit())
    md, js = write_tables(out, table)
    plots = draw_study_plots(out, table, planned) if any(r.metrics for r in results) else []
    print(md.read_text(), end="", flush=True)
    print(f"tables: {md}, {js}" + (f"; plots: {', '.join(str(p) for p in plots)}" if plots else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        args.argv = argv
        return run(args)

    return run_cli(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())
