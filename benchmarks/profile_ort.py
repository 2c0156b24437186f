"""Where an ONNX Runtime model spends its time, node by node (ONNX Runtime's own profiler).

Runs the model on the CPU provider with profiling on, and prints the nodes that cost most per inference
(after ONNX Runtime's graph optimisations, so a Q/DQ group shows as the QLinearConv / QLinearAdd it was
fused into) with their op type and whether they compute in 8-bit integers or in float, then the time
per op type and the three shares that decide an INT8 model's speed: integer kernels, float kernels,
and the QuantizeLinear / DequantizeLinear conversions between them.

    python benchmarks/profile_ort.py --onnx student.int8.onnx --threads 1 --runs 10 --calib calib/mine-val
    python benchmarks/profile_ort.py --onnx student.onnx student.int8.onnx --threads 1   # both, same frames

Speed is reported, never asserted; time nodes on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Op types whose arithmetic is 8-bit integer (ONNX Runtime's CPU kernels for a fused Q/DQ graph).
INTEGER_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QLinearAdd", "QLinearMul",
               "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearLeakyRelu",
               "QLinearSigmoid", "QGemm", "DynamicQuantizeLinear", "QLinearResize", "MaxPool_uint8"}
CONVERSION_OPS = {"QuantizeLinear", "DequantizeLinear"}


def node_times(onnx_path: Path, frame: np.ndarray, threads: int, runs: int) -> tuple[dict, int]:
    """{node name: (op type, mean ms per inference)} from one profiled session of `runs` inferences."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: frame})  # warm-up (kernel selection, allocations): not counted below
        for _ in range(runs):
            session.run(None, {name: frame})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        per_node[node].append(event["dur"] / 1000.0)
        op_of[node] = event.get("args", {}).get("op_name", "?")
    calls = runs + 1
    return {n: (op_of[n], sum(t[-runs:]) / runs) for n, t in per_node.items() if len(t) >= calls}, runs


def kind(op: str) -> str:
    if op in CONVERSION_OPS:
        return "Q/DQ conversion"
    return "int8" if op in INTEGER_OPS else "float"


def report(onnx_path: Path, times: dict, top: int) -> dict:
    total = sum(ms for _, ms in times.values())
    by_op: dict[str, float] = defaultdict(float)
    by_kind: dict[str, float] = defaultdict(float)
    for op, ms in times.values():
        by_op[op] += ms
        by_kind[kind(op)] += ms
    print(f"\n{onnx_path}: {total:.1f} ms per inference in {len(times)} nodes (sum of node kernels)")
    print(f"{'node':<60} {'op':<18} {'computes in':<16} {'ms':>8} {'share':>7}")
    for node, (op, ms) in sorted(times.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"{node[:60]:<60} {op:<18} {kind(op):<16} {ms:8.2f} {100 * ms / total:6.1f}%")
    print(f"{'op type':<30} {'ms':>8} {'share':>7}")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"{op:<30} {ms:8.2f} {100 * ms / total:6.1f}%")
    print("; ".join(f"{k}: {ms:.1f} ms ({100 * ms / total:.0f} %)" for k, ms in sorted(by_kind.items())))
    return {"model": str(onnx_path), "total_ms": total, "by_kind": dict(by_kind), "by_op": dict(by_op),
            "top": [{"node": n, "op": op, "ms": ms} for n, (op, ms) in
                    sorted(times.items(), key=lambda kv: -kv[1][1])[:top]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--onnx", type=Path, nargs="+", required=True, help="ONNX models to profile")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--runs", type=int, default=10, help="profiled inferences per model (after one warm-up)")
    parser.add_argument("--calib", type=Path, default=None,
                        help="calibration set whose first frame is the input (default: a random frame)")
    parser.add_argument("--top", type=int, default=15, help="how many of the costliest nodes to list")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from lix_deploy.artifact import read_metadata

    height, width = read_metadata(args.onnx[0]).input_size
    if args.calib is not None:
        from lix_deploy.calib import load_calibration_set

        frame = load_calibration_set(args.calib)[0][:1]
    else:
        frame = np.random.default_rng(0).uniform(0, 255, (1, 3, height, width)).astype(np.float32)
    results = []
    for path in args.onnx:
        times, _ = node_times(path, frame, args.threads, args.runs)
        results.append(report(path, times, args.top))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
