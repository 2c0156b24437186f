"""The parts of `python -m lix_deploy.benchmark` (the CLI in lix_deploy/benchmark.py), one job each.

memory   peak RSS, RSS growth and CUDA memory growth across a block of work
targets  what can be benchmarked: PyTorch eager student / teacher, artefacts through the runtime
results  timing one target on the frames (latency percentiles, labels) and scoring the labels
table    the text table and the CSV of the results
"""
