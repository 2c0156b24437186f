"""The comparison study behind `python -m lix_train.compare`, in small parts:

    ablations  named ablation sets (the issue's axes) as variants of dotted overrides
    grid       rows (methods, named rows such as lix_xzeros) x seeds x ablation variants, budgets and
               the warm-start track -> run specs
    tuning     the per-method tuning grids (val only) and the chosen settings, tuned.yaml
    runner     plan the specs (one run folder each, one shared teacher per teacher config) and run
               them through the same entry points as `lix_train.train_teacher` / `lix_train.distill`
    table      the tables as plain data: mean +- std over seeds, share of the teacher gap closed, per-class
               gains, budgets, warm start (table.json), results.json, the tuning table (tuning.json)
    table_md   the same tables as Markdown: table.md (test, or val-only), tuning.md; writes each with its .json
    plots      mIoU bars with per-seed points, per-class gains, ablation panels, mIoU vs budget, warm start,
               the geometry-classes qualitative grid

Light at import (no torch): the CLI's --help and --dry-run need none.
"""
