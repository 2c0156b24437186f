#!/usr/bin/env bash
# Protocol v2 of the study (issue 21) at a realistic scale on one data-centre GPU (H100 / H200): the
# RGB+normals teacher trained to convergence, then the RGB baseline, CWD and LIX (each at its tuned
# settings, lix_train/study/tuned.yaml) at two student budgets, one seed, through
# `python -m lix_train.compare` on the embedded synthetic set, printing the same table.md at the end.
#
#   bash benchmarks/gpu_study.sh               # OUT=runs/gpu_study; PYTHON=python
#   bash benchmarks/gpu_study.sh --dry-run     # plan only (what the CPU test runs)
#   OUT=/scratch/gpu_study bash benchmarks/gpu_study.sh --seeds 3    # extra compare options are passed on
#
# Scale: teacher and student at width 1.0 (ResNet-18 layout: 22.6 M / 11.4 M parameters), 192x640
# (the embedded set's own resolution: data.transforms.size and crop_size), AMP (float16 with a
# GradScaler, channels-last), batch 16, AdamW lr 3e-3 as in the preset. The schedule is the CPU
# protocol v2 (lix_train/presets/synthetic.yaml) in training samples at twice its batch: the teacher
# 4000 iterations (v2: 8000 at batch 8), the students 2000 (the converged budget, v2: 4000 at batch 8)
# and 500 (v2's 1000-iteration budget), with --budgets 500,2000.
# The teacher trains alone with 14 loader workers; then the students run side by side on the GPU
# (--jobs 3, 4 workers each: 3 x 4 workers + 3 trainers + this script fit 16 cores).
#
# Time estimate, from the code (no GPU was available to measure it), for one H100 / H200 and 16 cores:
# - Compute: FlopCounterMode on one 192x640 image gives 9.8 GFLOP (student) and 18.6 GFLOP (teacher)
#   per forward. A teacher step is ~3 x 18.6 x 16 = 0.9 TFLOP, a distillation step (student forward +
#   backward + teacher forward) ~(3 x 9.8 + 18.6) x 16 = 0.77 TFLOP; at a conservative 150 TFLOP/s of
#   AMP convolution throughput (~15 % of peak) that is 5-6 ms a step, under the per-step launch /
#   optimiser overhead (~10-20 ms a step for LIX's loss terms).
# - Loader: the bound. A training sample (frame cache + X cache, scale / crop / flip at 192x640)
#   took 25 ms on one core of the 2-core CI machine at load ~3 (about 8 ms on an idle core); the
#   quick preset's H100 run in README.md (1000 iterations at batch 8 with 1 worker in 79 s) was
#   loader-bound at ~100 samples/s per worker at 96x320. Taking 60 samples/s per worker at 192x640:
#   teacher 64,000 samples / (14 x 60/s) ~ 80 s; the six student runs (three rows at 2000 + 500
#   iterations) 120,000 / (12 x 60/s) ~ 170 s.
# - Fixed costs: generating the embedded set (~1 min on 2 cores, render processes = cores: ~15 s),
#   the frame and X caches (~40 s), seven process starts with CUDA init, test + val scoring at
#   batch 1 (~810 images a student run), the study's plots: ~2 min.
# Total ~5 min, under the 9-minute budget with ~40 % to spare; the loader, not the GPU, decides it,
# so a larger batch would cost time roughly in proportion. The script prints the wall time at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu_study}
ARGS=(
  --preset synthetic --seeds 1 --methods baseline,cwd,lix --no-control --out "$OUT" --jobs 3
  --teacher.model.width 1.0 --student.model.width 1.0
  --data.transforms.size 192,640 --data.transforms.crop_size 192,640
  --teacher.train.iters 4000 --student.train.iters 2000 --budgets 500,2000
  --teacher.train.batch_size 16 --student.train.batch_size 16
  --teacher.train.amp true --student.train.amp true
  --teacher.train.device cuda --student.train.device cuda
  --teacher.train.num_workers 14 --student.train.num_workers 4
  --teacher.train.ckpt_every 1000 --student.train.ckpt_every 1000 --teacher.train.eval_every 500
)
echo "+ $PYTHON -m lix_train.compare ${ARGS[*]} $*"
started=$(date +%s)
"$PYTHON" -m lix_train.compare "${ARGS[@]}" "$@"
echo "gpu_study: $(( $(date +%s) - started )) s wall time; table: $OUT/table.md, results: $OUT/results.json"
