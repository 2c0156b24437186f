"""The LIX study: every distillation method (and ablation) on one protocol, several seeds, one table.

    python -m lix_train.compare --preset synthetic --seeds 3                        # the full comparison
    python -m lix_train.compare --preset synthetic --seeds 3 --ablation dwc_depth fusion
    python -m lix_train.compare --preset quick --seeds 2 --methods baseline,lix \\
        --teacher.train.iters 50 --student.train.iters 50                           # a smoke test
    python -m lix_train.compare --preset synthetic --dry-run                        # list the runs
    python -m lix_train.compare --preset synthetic --seeds 3 --tune cwd --tune kd   # choose settings on val
    python -m lix_train.compare --preset synthetic --seeds 3 --budgets 1000,2000,4000 --warm-start 1000

Every student run is `python -m lix_train.distill` with the study's options, in OUT/runs/<name>/;
teachers come from the shared store (one per teacher config, trained once, reused by every run
and by later studies). Rerunning the same command skips finished runs (metrics.json present)
and continues interrupted ones. The results go to OUT/table.md, OUT/table.json, OUT/results.json
and OUT/plots/.

Rows and tracks beyond the methods x seeds table:

    --methods ...,lix_xzeros   named rows (grid.NAMED_ROWS): lix_xzeros = LIX distilled from the
                               X = zeros control teacher (data.zero_x true), next to lix; any
                               METHOD_xzeros likewise (cwd_xzeros, ...); baseline_wide = the
                               labels-only student at width 0.5 (the RGB ceiling's second probe)
    tuned settings             lix_train/study/tuned.yaml (method -> distill overrides chosen on val,
                               each with its evidence) applies to its method's runs; --untuned: the
                               preset's defaults; a --config / --section.key option wins over it
    --tune METHOD              the method's tuning grid (study/tuning.py GRIDS) at every seed, scored
                               on val only (eval.score_test false: test is never read); writes
                               OUT/tuning.md / tuning.json, best first, and the tuned.yaml line
    --tune-top K               a screen: with seed 0 finished, seeds 1.. run only each method's K best
                               seed-0 points; the best is chosen among the points at every seed
    --budgets A,B,...          every row x seed at each student.train.iters: <row>-i<iters>-s<seed>
                               (the preset's budget is the main table); plots/budgets.png
    --only-budget ITERS        train only that budget's runs now (the short one first), tables of
                               what is finished; the same command without it trains the rest
    --warm-start ITERS         warm-<row>-s<seed>: ITERS more iterations from the finished
                               baseline-s<seed> student (student.train.init_from), the baseline row
                               continuing with labels only as the control; plots/warm_start.png
    --results-json PATH        also write results.json there (per-seed test / val mIoU in %)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lix_train.cli import ExperimentParser, UserError, available_presets, run_cli
from lix_train.config import add_config_arguments, overrides_from_args, resolve
from lix_train.distillers.config import METHODS
from lix_train.experiment import PRESETS_DIR, ExperimentConfig
from lix_train.study import ablations as ablation_sets
from lix_train.study.tuning import GRIDS, describe_grid, describe_tuned, expand_tuning, load_tuned
from lix_train.study.grid import (
    BASELINE, DEFAULT_NAMED_ROWS, METHOD_KEY, NAMED_ROWS, SEED_KEY, XZEROS, expand, expand_budgets,
    expand_warm_start, named_row, row_names,
)

PROG = "python -m lix_train.compare"
TUNED_NAME = "lix_train/study/tuned.yaml"
DEFAULT_PRESET = "synthetic"
DESCRIPTION = (
    "Compare distillation methods (and LIX ablations) on one protocol over several seeds. One frozen RGB+X "
    "teacher per teacher config is trained once in the shared teacher store and shared by every run; seeds vary "
    "the student only (student.train.seed 0..N-1; the teacher's seed stays the preset's). Every method gets the "
    "same data, schedule and test split. Each run is `python -m lix_train.distill` in OUT/runs/<name>/; rerunning "
    "skips finished runs and resumes interrupted ones. Writes OUT/table.md and OUT/table.json (mean +- std over "
    "seeds, share of the teacher gap closed = (student - baseline) / (teacher - baseline), per-class IoU gains "
    "over the RGB baseline, the command, the commit and the protocol) and OUT/plots/ (mIoU bars with per-seed "
    "points, a heat map of the per-class gains, one panel per ablation axis, a qualitative grid of the classes "
    "where geometry matters most). The baseline is "
    "always run (the gap needs it), and so is the control, the teacher architecture fed X = zeros, unless "
    "--no-control. Each method runs at its tuned settings (lix_train/study/tuned.yaml, chosen on val; "
    "--untuned for the preset's defaults); --tune chooses them on val without reading test. --budgets adds every "
    "row at other student budgets, --warm-start a track that continues the baseline students with each method; "
    "OUT/results.json holds the per-seed numbers. The synthetic preset is the benchmark protocol (hours for 8 "
    "methods x 3 seeds on 2 CPU cores, even with --jobs 2: list the runs first with --dry-run)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = ExperimentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        usage="%(prog)s [-h] [--preset NAME] [--config FILE] [--seeds N] [--methods A,B,...] [--ablation NAME ...] "
              "[--one-seed A,B,...] [--no-control] [--control-seeds N] [--untuned] [--tune METHOD ...] [--tune-top K] [--budgets A,B,...] [--only-budget ITERS] [--warm-start ITERS] "
              "[--warm-seeds N] [--out DIR] "
              "[--results-json PATH] [--jobs N] [--dry-run] [--report-only] [--isolate] [--SECTION.KEY VALUE ...]")
    parser.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                        help=f"Protocol every run starts from: {', '.join(available_presets())} "
                             "(lix_train/presets/NAME.yaml).")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML file of options applied over the preset in every run.")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="Student seeds 0..N-1 per method and ablation variant (at least 3 for reported "
                             "numbers: one-seed differences under about 1.5 mIoU mean nothing).")
    parser.add_argument("--methods", default=",".join([*METHODS, *DEFAULT_NAMED_ROWS]), metavar="A,B,...",
                        help=f"Comma-separated table rows: distillation methods, from: {', '.join(METHODS)}; "
                             "named rows: " + "; ".join(f"{r.name} ({r.description})" for r in NAMED_ROWS.values())
                             + f"; and METHOD{XZEROS} for any method that reads a teacher (that method distilled "
                               "from the X = zeros control teacher, e.g. cwd_xzeros). The baseline is always run "
                               "(added when missing).")
    parser.add_argument("--one-seed", default="", metavar="A,B,...",
                        help="Rows of the main table (the preset's budget) that run at the first seed only: a "
                             "screen of the methods outside the leaders when a run there costs several times the "
                             "others. The table shows each row's seeds; --budgets still runs them at every seed.")
    parser.add_argument("--ablation", nargs="+", action="extend", default=[], metavar="NAME",
                        help="Ablation sets to run as well (each variant x every seed, under LIX; a variant equal to "
                             "the defaults reuses the main run): " + ablation_sets.describe()
                             + f"; {ablation_sets.ALL} = every set.")
    parser.add_argument("--no-control", action="store_true",
                        help="Skip the control (the teacher architecture trained and scored on X = zeros).")
    parser.add_argument("--control-seeds", type=int, default=1, metavar="N",
                        help="Train the control at N teacher seeds (teacher.train.seed: the preset's, then 1..N-1; "
                             "folders control-zero_x, control-zero_x-t1, ...) and report their mean ± std: each is a "
                             "teacher training. The X = zeros rows (lix_xzeros, ...) distil the preset's.")
    parser.add_argument("--untuned", action="store_true",
                        help="Run every method at the preset's defaults instead of its tuned settings "
                             f"({TUNED_NAME}: method -> distill options chosen on val; shown by --dry-run and the "
                             "table).")
    parser.add_argument("--tune", action="append", default=[], metavar="METHOD",
                        help="Tune METHOD instead of running the table (repeatable, or A,B): its grid "
                             "(lix_train/study/tuning.py: " + "; ".join(f"{m}: {describe_grid(m)}" for m in GRIDS)
                             + ") at every seed, each point a run tune-METHOD-POINT-sSEED scored on the val split "
                               "only (eval.score_test false: the test split is never read). Writes OUT/tuning.md "
                               "and tuning.json, best first by mean val mIoU, with the line to copy into "
                               f"{TUNED_NAME}. A later table run in the same OUT with a point's config and seed "
                               "starts from its final checkpoint and only scores.")
    parser.add_argument("--tune-top", type=int, default=None, metavar="K",
                        help="With --tune and --seeds N > 1, a screen: seed 0 runs every point (it must be finished "
                             "in OUT: run --seeds 1 first), seeds 1..N-1 only each method's K best points at seed 0; "
                             "tuning.md ranks the points carried to every seed first and chooses among them. A "
                             "point screened out keeps the later seeds it already finished (an earlier screen's).")
    parser.add_argument("--budgets", default="", metavar="A,B,...",
                        help="Student budgets (student.train.iters): every row x seed at each, in runs "
                             "ROW-iITERS-sSEED; the preset's budget is the main table's runs. Adds a test and a val "
                             "column per budget to the table and plots/budgets.png.")
    parser.add_argument("--only-budget", type=int, default=None, metavar="ITERS",
                        help="Train only the runs at this one of --budgets (and the teachers they read, the "
                             "control's included) and write the tables of what is finished: a long study in "
                             "steps, the short budget first; the same command without it trains the rest.")
    parser.add_argument("--warm-start", type=int, default=None, metavar="ITERS",
                        help="Warm-start track: for every row and seed, a run warm-ROW-sSEED that starts from the "
                             "finished baseline-sSEED student of this study (student.train.init_from, fresh "
                             "optimiser and schedule) and trains ITERS more iterations with the row's method; the "
                             "baseline's own warm-start row continues with labels only (the fair control). They "
                             "start after the baseline runs (baseline_wide, another network, has none). A table section "
                             "and plots/warm_start.png.")
    parser.add_argument("--warm-seeds", type=int, default=None, metavar="N",
                        help="Run the warm-start track at seeds 0..N-1 only (default: every seed of --seeds).")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="Study folder (default: runs/compare/<preset>). The same folder continues a study.")
    parser.add_argument("--results-json", type=Path, default=None, metavar="PATH",
                        help="Also write the study's results.json here (always written to OUT/results.json): the "
                             "teacher's test mIoU, the default method, the protocol, and per row the per-seed test "
                             "and val mIoU in %% of the main table, plus the budgets and the warm-start track.")
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
    parser.add_help_views()
    add_config_arguments(parser, ExperimentConfig, resolve(ExperimentConfig, PRESETS_DIR, DEFAULT_PRESET, None, {}))
    parser.epilog = parser.defaults_note(DEFAULT_PRESET)
    return parser


def parse_methods(text: str) -> list[str]:
    """The --methods list (methods and named rows), validated, with the baseline first (the gap share needs it)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS and named_row(m) is None]
    if unknown:
        raise UserError(f"--methods: unknown method {unknown[0]!r}; valid: {', '.join(row_names())}")
    return list(dict.fromkeys([BASELINE, *methods]))


def parse_tune(values: list[str]) -> list[str]:
    """The --tune methods (repeatable or comma-separated), each a method with a grid."""
    methods = list(dict.fromkeys(m.strip() for v in values for m in v.split(",") if m.strip()))
    for method in methods:
        if method not in METHODS:
            raise UserError(f"--tune: unknown method {method!r}; valid: {', '.join(METHODS)}")
        if method not in GRIDS:
            raise UserError(f"--tune {method}: no tuning grid for it (grids: {', '.join(GRIDS)}); add one to GRIDS "
                            "in lix_train/study/tuning.py")
    return methods


def parse_budgets(text: str) -> list[int]:
    """--budgets 1000,2000,4000 -> [1000, 2000, 4000] (distinct positive integers, sorted)."""
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--budgets {text!r}: expected comma-separated iteration counts, e.g. 1000,2000,4000") from None
    if text.strip() and (not budgets or min(budgets) < 1):
        raise UserError(f"--budgets {text!r}: iteration counts must be positive")
    return sorted(set(budgets))


def tuned_settings(args: argparse.Namespace, overrides: dict) -> dict[str, dict]:
    """tuned.yaml's settings for the known methods, less every option the study sets itself (--config, --KEY)."""
    from lix_train.config import read_yaml
    from lix_train.study.planning import flatten

    if args.untuned:
        return {}
    try:
        tuned = load_tuned(METHODS)
    except ValueError as err:
        raise UserError(str(err)) from None
    given = set(flatten(overrides))
    if args.config is not None:
        given |= set(flatten(read_yaml(args.config)))
    return {m: {k: v for k, v in o.items() if k not in given} for m, o in tuned.items()}


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


def _status(run) -> str:
    from lix_train.study.planning import check_finished_run

    if run.same_as:
        return f"same as {run.same_as}"
    if not run.done and run.trained_in:
        return f"to score (trained in {run.trained_in})"
    if not run.done:
        return "to run" + (f" after {','.join(run.spec.after)}" if run.spec.after else "")
    try:
        check_finished_run(run)
    except UserError:
        return "finished, other config"  # the real call refuses it, naming the options
    return "finished"


def print_plan(planned, preset: str, settings: str = "") -> None:
    from lix_train.study.records import teacher_complete

    teachers = {}
    for run in planned:
        teachers.setdefault(run.teacher_dir, teacher_complete(run.teacher_dir))
    if settings:
        print(settings)
    print(f"{len(planned)} runs, {len(teachers)} teacher config(s):")
    for teacher_dir, complete in teachers.items():
        print(f"  teacher {teacher_dir}: {'in the store' if complete else 'to train'}")
    if planned:
        example = next((r for r in planned if not r.spec.teacher_only), planned[0])
        print(f"each run, e.g. {example.spec.name}: {example.command(preset)}")
    for i, run in enumerate(planned, 1):
        status = _status(run)
        if not run.spec.needs_test:
            status += " (val only)"
        overrides = " ".join(f"{k}={v}" for k, v in run.spec.overrides.items())
        print(f"{i:4d}. {run.spec.name:<28} {status:<20} teacher {run.teacher_dir.name}  {overrides}")


def at_budget(planned: list, iters: int) -> list:
    """--only-budget: the student runs trained for `iters` iterations from scratch (not the warm-start track,
    which starts from the main table's baselines) and the teacher-only runs (the control)."""
    return [p for p in planned if p.spec.teacher_only or (p.cfg.student.train.iters == iters and not p.spec.after)]


def finished_val(setup, methods: list[str], seeds: list[int]) -> dict[str, float | None]:
    """Run name -> val mIoU of every grid point's run at every seed (None while unfinished).

    Read through the plan, so a point served by a finished run of another study in the same OUT with its
    config (an ablation variant that a grid block repeats) counts with that run's score."""
    from lix_train.study.planning import plan
    from lix_train.study.records import load_metrics

    return {run.spec.name: ((load_metrics(run) or {}).get("student_val") or {}).get("miou")
            for run in plan(expand_tuning(methods, seeds), setup) if run.spec.method in methods}


def run(args: argparse.Namespace) -> int:
    from lix_train.config import ConfigError
    from lix_train.study.planning import StudySetup, plan
    from lix_train.study.runner import execute

    methods, one_seed, tune, budgets = check_args(args)
    out = args.out or Path("runs/compare") / args.preset
    setup = StudySetup(preset=args.preset, out=out, config_file=args.config, overrides=study_overrides(args),
                       isolate=args.isolate, jobs=args.jobs)
    specs, chosen, tuned, settings = study_specs(args, setup, methods, one_seed, tune, budgets)
    try:
        planned = plan(specs, setup)
    except ValueError as err:  # a config error of one run: say which
        raise ConfigError(str(err)) from None
    if args.dry_run:
        print_plan(planned, args.preset, settings)
        return 0
    if args.report_only and not any(p.done for p in planned):
        raise UserError(f"--report-only: no finished runs of this study under {out}; run it first (without "
                        "--report-only)")
    if not args.report_only:
        execute(planned if args.only_budget is None else at_budget(planned, args.only_budget), setup)
    if tune:
        report_tuning(planned, args, out)
    else:
        report(planned, chosen, args, out, tuned=tuned, budgets=budgets)
    return 0


def check_args(args: argparse.Namespace) -> tuple[list[str], list[str], list[str], list[int]]:
    """Refuse a bad request before any work; returns (rows, --one-seed rows, --tune methods, --budgets)."""
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least one seed")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: need at least one")
    if args.config is not None and not args.config.is_file():
        raise UserError(f"--config {args.config}: file not found")
    if args.preset not in available_presets():
        raise UserError(f"--preset {args.preset!r}: unknown; available: {', '.join(available_presets())}")
    if args.warm_start is not None and args.warm_start < 1:
        raise UserError(f"--warm-start {args.warm_start}: need at least one iteration")
    methods = parse_methods(args.methods)
    one_seed = [m.strip() for m in args.one_seed.split(",") if m.strip()]
    stray = [m for m in one_seed if m not in methods]
    if stray:
        raise UserError(f"--one-seed: {stray[0]!r} is not one of the study's rows ({', '.join(methods)})")
    if args.control_seeds < 1:
        raise UserError(f"--control-seeds {args.control_seeds}: need at least one")
    if args.control_seeds > 1 and args.no_control:
        raise UserError("--control-seeds with --no-control: the control is not run")
    if args.warm_seeds is not None and not 1 <= args.warm_seeds <= args.seeds:
        raise UserError(f"--warm-seeds {args.warm_seeds}: between 1 and --seeds ({args.seeds})")
    if args.warm_seeds is not None and args.warm_start is None:
        raise UserError("--warm-seeds needs --warm-start ITERS (the track it limits)")
    tune = parse_tune(args.tune)
    budgets = parse_budgets(args.budgets)
    if args.only_budget is not None and args.only_budget not in budgets:
        raise UserError(f"--only-budget {args.only_budget}: not one of --budgets ({args.budgets or 'none given'})")
    if args.tune_top is not None and (not tune or args.tune_top < 1):
        raise UserError(f"--tune-top {args.tune_top}: " + ("needs --tune METHOD (the grids it screens)" if not tune
                                                           else "need at least one point"))
    if tune:
        extra = [flag for flag, given in (("--budgets", budgets), ("--warm-start", args.warm_start is not None),
                                          ("--ablation", args.ablation), ("--results-json", args.results_json),
                                          ("--one-seed", one_seed), ("--control-seeds", args.control_seeds > 1))
                 if given]
        if extra:
            raise UserError(f"--tune runs the tuning grid alone; run {extra[0]} in a call of its own")
    return methods, one_seed, tune, budgets


def study_specs(args: argparse.Namespace, setup, methods: list[str], one_seed: list[str], tune: list[str],
                budgets: list[int]) -> tuple[list, list, dict[str, dict], str]:
    """The study's run specs: the tuning grids (--tune), or the table's rows x seeds with the ablations and the
    control, the budgets and the warm-start track. Returns (specs, ablation sets, tuned settings, settings line)."""
    from lix_train.config import ConfigError
    from lix_train.distill import STUDENT_FILE
    from lix_train.study.planning import RUNS_DIR, resolve_base

    seeds = list(range(args.seeds))
    preset_iters = None
    if budgets:  # the preset's own budget (after --config and --student.train.iters) is the main table
        try:
            preset_iters = resolve_base(setup).student.train.iters
        except ValueError as err:
            raise ConfigError(str(err)) from None
    chosen, tuned = [], {}
    try:
        if tune:
            val = finished_val(setup, tune, seeds) if args.tune_top and len(seeds) > 1 else None
            specs = expand_tuning(tune, seeds, args.tune_top, val)
            settings = ("settings: each tuning point over the preset's defaults (tuned.yaml is not applied); "
                        "val only, the test split is never read")
        else:
            tuned = tuned_settings(args, setup.overrides)
            names = list(args.ablation) + ([] if args.no_control else [ablation_sets.CONTROL])
            chosen = ablation_sets.select(names)
            specs = expand(methods, seeds, chosen, tuned, one_seed, args.control_seeds)
            if budgets:
                specs += expand_budgets(methods, seeds, budgets, preset_iters, tuned)
            if args.warm_start is not None:
                init = lambda seed: str(setup.out / RUNS_DIR / f"{BASELINE}-s{seed}" / STUDENT_FILE)  # noqa: E731
                warm_seeds = seeds[:args.warm_seeds] if args.warm_seeds else seeds
                specs += expand_warm_start(methods, warm_seeds, args.warm_start, init, tuned)
            settings = ("settings: the preset's defaults (--untuned)" if args.untuned else
                        f"settings: tuned ({TUNED_NAME}): {describe_tuned(tuned)}; the rest at the preset's defaults")
    except ValueError as err:
        raise UserError(f"{'--tune' if tune else '--ablation / --methods'}: {err}") from None
    return specs, chosen, tuned, settings


def _command(args: argparse.Namespace) -> str:
    """The command that produces these runs (a --report-only redraw names the study, not itself)."""
    return " ".join([PROG, *map(shlex.quote, (a for a in args.argv if a != "--report-only"))])


def report(planned, chosen, args: argparse.Namespace, out: Path, tuned: dict | None = None,
           budgets: list[int] | None = None) -> None:
    """Aggregate the finished runs into table.md / table.json / results.json and draw the study's plots."""
    import dataclasses

    from lix_train.distillers.config import DistillConfig
    from lix_train.report import git_commit, write_json
    from lix_train.study.plots import draw_study_plots
    from lix_train.study.records import load_metrics
    from lix_train.study.table import RESULTS_JSON, RunResult, aggregate, protocol_of, results_json
    from lix_train.study.table_md import write_tables

    results = [RunResult(p.spec, load_metrics(p)) for p in planned]
    students = [p for p in planned if not p.spec.teacher_only]
    reference = next((p for p in students if p.spec.group == "methods"), students[0] if students else planned[0])
    sample = next((r.metrics for r in results if r.metrics and "test_frames" in r.metrics), None)
    protocol = protocol_of(reference.cfg, args.preset, list(range(args.seeds)), sample)
    default_method = next(f.default for f in dataclasses.fields(DistillConfig) if f.name == "method")
    table = aggregate(results, chosen, protocol, _command(args), git_commit(), tuned=tuned, untuned=args.untuned,
                      budgets=budgets or (), warm_iters=args.warm_start, default_method=default_method)
    md, js = write_tables(out, table)
    summary = results_json(table)
    written = [write_json(out / RESULTS_JSON, summary)]
    if args.results_json is not None:
        written.append(write_json(args.results_json, summary))  # atomic: temp file beside it, then rename
    plots = draw_study_plots(out, table, planned) if any(r.metrics for r in results) else []
    print(md.read_text(), end="", flush=True)
    print(f"tables: {md}, {js}; results: {', '.join(map(str, written))}"
          + (f"; plots: {', '.join(str(p) for p in plots)}" if plots else ""), flush=True)


def report_tuning(planned, args: argparse.Namespace, out: Path) -> None:
    """Aggregate the tuning runs (val only) into tuning.md / tuning.json and print them."""
    from lix_train.report import git_commit
    from lix_train.study.records import load_metrics
    from lix_train.study.table import RunResult, aggregate_tuning, protocol_of
    from lix_train.study.table_md import write_tuning

    results = [RunResult(p.spec, load_metrics(p)) for p in planned]
    protocol = protocol_of(planned[0].cfg, args.preset, list(range(args.seeds)), None)
    md, js = write_tuning(out, aggregate_tuning(results, protocol, _command(args), git_commit()))
    print(md.read_text(), end="", flush=True)
    print(f"tuning tables: {md}, {js}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        args.argv = argv
        return run(args)

    return run_cli(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())
