"""The comparison study behind `python -m lix_train.compare`, in small parts:

    ablations  named ablation sets (the issue's axes) as variants of dotted overrides
    grid       methods x seeds x ablation variants -> run specs
    runner     plan the specs (one run folder each, one shared teacher per teacher config) and run
               them through the same entry points as `lix_train.train_teacher` / `lix_train.distill`
    table      mean +- std over seeds, share of the teacher gap closed, per-class gains -> table.md / .json
    plots      mIoU bars with per-seed points, per-class gains, the geometry-classes qualitative grid

Light at import (no torch): the CLI's --help and --dry-run need none.
"""
