#!/usr/bin/env bash
# Protocol v2's study (issue 21, docs/results.md section V) on the 2-core CPU machine, resumable across
# working sessions and machines: one command puts the archived evidence back, trains what is left from
# the commit every run of the study trained with, and then runs the check at 8000 iterations.
#
#   mkdir -p runs/logs && nohup bash benchmarks/cpu_study_v2.sh > runs/logs/cpu_study_v2.log 2>&1 &
#   bash benchmarks/cpu_study_v2.sh --dry-run      # plan only; extra options go to both compare commands
#
# 1. `archive restore` copies the committed runs and teachers (ARCHIVE) back under runs/; it never
#    overwrites, so rerunning it is free. Finished runs are skipped by compare, unfinished ones resume
#    from their checkpoints.
# 2. The runs train from a git worktree at STUDY_COMMIT (WORKTREE, made once; its runs/ is a link to this
#    checkout's), so that work on main cannot change the code under a study that takes days of CPU. An
#    empty STUDY_COMMIT runs from this checkout.
# 3. The main table (OUT): every row at 1000 and 4000 iterations, the X = zeros control, the warm-start
#    track. Then the baseline and the val choice (table.json's val_choice, never a test figure) at 8000
#    iterations, one seed (CHECK_OUT): whether 4000 is converged for the default too.
# Cost on 2 cores, two runs side by side: a run at 4000 iterations 40-90 min, at 8000 about twice that.
# The tables are written by compare at the end of each command; docs/results.json is written from
# main with the --report-only command in docs/results.md V.3e.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ARCHIVE=${ARCHIVE-docs/studies/v2/tune}
STUDY_COMMIT=${STUDY_COMMIT-343b2d4}
WORKTREE=${WORKTREE:-$ROOT/../lix-study-$STUDY_COMMIT}
OUT=${OUT:-runs/compare/v2-tune}
CHECK_OUT=${CHECK_OUT:-runs/compare/v2-8000}
ROWS=baseline,cwd,halluc,lix,cwd_xzeros,kd,dkd,at,dwld,arfd,mgd,aux_x,lix_xzeros,baseline_wide
ONE_SEED=kd,dkd,at,dwld,arfd,mgd,aux_x,lix_xzeros

if [[ -n "$ARCHIVE" ]]; then
  "$PYTHON" -m lix_train.study.archive restore --from "$ARCHIVE" --study "$OUT" --teachers runs/teachers
fi
if [[ -n "$STUDY_COMMIT" ]]; then
  if [[ ! -d "$WORKTREE" ]]; then
    git worktree add --detach "$WORKTREE" "$STUDY_COMMIT"
  fi
  mkdir -p runs
  [[ -e "$WORKTREE/runs" ]] || ln -s "$ROOT/runs" "$WORKTREE/runs"
  cd "$WORKTREE"
  echo "cpu_study_v2: training from $WORKTREE at $(git rev-parse --short HEAD)"
fi

study=(--preset synthetic --seeds 3 --jobs 2 --out "$OUT" --methods "$ROWS" --one-seed "$ONE_SEED"
       --budgets 1000,4000 --warm-start 1000 --warm-seeds 1 --control-seeds 3)
echo "+ $PYTHON -m lix_train.compare ${study[*]} $*"
"$PYTHON" -m lix_train.compare "${study[@]}" "$@"

table="$OUT/table.json"
if [[ ! -f "$table" ]]; then
  echo "cpu_study_v2: $table is missing: the main table has not been written, so there is no val choice for the" \
       "check at 8000 iterations" >&2
  exit 1
fi
choice=$("$PYTHON" -c 'import json, sys; print((json.load(open(sys.argv[1]))["val_choice"] or {}).get("method", ""))' \
         "$table")
if [[ -z "$choice" ]]; then
  echo "cpu_study_v2: $table has no val choice yet (no distiller finished at 3 seeds at the converged budget)" >&2
  exit 1
fi
check=(--preset synthetic --seeds 1 --jobs 2 --out "$CHECK_OUT" --methods "baseline,$choice" --no-control
       --student.train.iters 8000)
echo "cpu_study_v2: the val choice in $table is $choice"
echo "+ $PYTHON -m lix_train.compare ${check[*]} $*"
"$PYTHON" -m lix_train.compare "${check[@]}" "$@"
