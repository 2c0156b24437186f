"""The comparison study behind `python -m lix_train.compare`, in small parts:

    ablations  named ablation sets (the issue's axes) as variants of dotted overrides
    grid       rows (methods, named rows such as lix_xzeros) x seeds x ablation variants, budgets and
               the warm-start track -> run specs
    tuning     the per-method tuning grids (val only) and the chosen settings, tuned.yaml
    planning   resolve the specs' configs, one run folder each (identical configs share one), one shared
               teacher per teacher config; check that the runs compare fairly (same protocol, finished
               runs made with this config)
    records    a run folder's record: finished or not, its metrics.json, a teacher-only run's record
    runner     run the plan through the same entry points as `lix_train.train_teacher` /
               `lix_train.distill`: teachers first, then the student runs, one by one or --jobs N
    parallel   N entry-point processes side by side, each with its log
    table      the tables as plain data: mean +- std over seeds, share of the teacher gap closed, per-class
               gains, budgets, warm start (table.json), results.json, the tuning table (tuning.json)
    table_md   the same tables as Markdown: table.md (test, or val-only), tuning.md; writes each with its .json
    plots      mIoU bars with per-seed points, a heat map of the per-class gains, ablation panels, mIoU vs
               budget, warm start, the geometry-classes qualitative grid
    curves     `python -m lix_train.study.curves`: val mIoU against iteration of several runs (is a budget
               converged?)
    class_val  `python -m lix_train.study.class_val`: final val IoU per class of runs side by side (where
               one model's lead over another lies)
    archive    `python -m lix_train.study.archive save|restore`: a study's evidence in a committed folder

Light at import (no torch): the CLI's --help and --dry-run need none.
"""
