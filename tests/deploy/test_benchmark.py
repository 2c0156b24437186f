"""The benchmark's measurement helpers, and one CPU run over PyTorch eager, ONNX Runtime FP32 and INT8."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the benchmark runs ONNX Runtime (the [deploy] extra)")

from lix_deploy import benchmark  # noqa: E402
from lix_deploy.bench.memory import MemoryProbe, max_rss_kb, read_proc_status  # noqa: E402
from lix_deploy.bench.results import latency_summary, run_target  # noqa: E402
from lix_deploy.bench.table import format_table  # noqa: E402
from lix_deploy.bench.targets import Target  # noqa: E402


def test_latency_summary_reference_values():
    summary = latency_summary(np.arange(1, 101, dtype=float))
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p99_ms"] == pytest.approx(99.01)
    assert summary["mean_ms"] == pytest.approx(50.5) and summary["fps"] == pytest.approx(1000 / 50.5)
    with pytest.raises(ValueError, match="frames"):
        latency_summary(np.array([]))


def test_read_proc_status_parses_kilobytes():
    text = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"
    assert read_proc_status(text) == {"VmHWM": 204800, "VmRSS": 102400}
    assert read_proc_status("nothing here") == {}


def test_memory_probe_sees_an_allocation():
    if not read_proc_status():
        pytest.skip("no /proc/self/status on this platform")
    before_mb = read_proc_status()["VmRSS"] / 1024
    probe = MemoryProbe()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    memory = probe.finish()
    del block
    assert memory["rss_growth_mb"] >= 48
    # "peak RSS" is the real peak of the process (issue 15), not the growth
    assert memory["peak_rss_mb"] >= before_mb + 48 and memory["peak_rss_mb"] > memory["rss_growth_mb"]


def test_memory_probe_without_peak_reset_uses_ru_maxrss(monkeypatch):
    if not read_proc_status() or max_rss_kb() is None:
        pytest.skip("no /proc/self/status or getrusage on this platform")
    monkeypatch.setattr("lix_deploy.bench.memory.reset_peak_rss", lambda: False)
    probe = MemoryProbe()
    block = np.ones(32 * 2**20 // 8)
    memory = probe.finish()
    del block
    assert "ru_maxrss" in memory["rss_method"] and "not a peak" in memory["rss_method"]
    assert memory["peak_rss_mb"] >= read_proc_status()["VmRSS"] / 1024 - 1
    import resource

    assert memory["peak_rss_mb"] == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, abs=64)


def test_a_failing_backend_is_reported_not_fatal():
    def load():
        raise RuntimeError("no such engine")

    target = Target("broken", "tensorrt", "int8", "x.engine", load)
    result = run_target(target, np.zeros((2, 3, 4, 4), np.float32), timed=3, warmup=1)
    assert "no such engine" in result.error and result.p50_ms is None
    assert "ERROR" in format_table([result], "none")


def test_run_target_times_and_keeps_one_label_pass():
    calls = []

    def load():
        def predict(batch):
            calls.append(batch.shape[0])
            return (batch[:, 0] > 0.5).astype(np.uint8)
        return predict, lambda: None

    frames = np.random.default_rng(0).random((3, 3, 4, 4)).astype(np.float32)
    result = run_target(Target("t", "pytorch", "fp32", "-", load), frames, timed=5, warmup=2)
    assert len(calls) == 7 and set(calls) == {1}
    np.testing.assert_array_equal(result.labels, (frames[:, 0] > 0.5).astype(np.uint8))
    assert result.p50_ms <= result.p99_ms and result.fps > 0


@pytest.mark.slow
def test_cli_benchmarks_pytorch_ort_fp32_and_int8_in_one_run(tmp_path):
    from deploy_fixtures import tiny_frames, tiny_onnx, tiny_teacher_checkpoint

    from lix_deploy.builders.onnxruntime_build import quantize_int8

    onnx = tiny_onnx(tmp_path)
    int8 = tmp_path / "student.int8.onnx"
    quantize_int8(onnx, int8, tiny_frames(4))
    out = tmp_path / "bench.json"
    code = benchmark.main(["--checkpoint", str(tmp_path / "student.pt"), "--onnx", str(onnx),
                           "--artefacts", str(int8), "--teacher-checkpoint", str(tiny_teacher_checkpoint(tmp_path)),
                           "--frames", "6", "--warmup", "1", "--threads", "1",
                           "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names[0].startswith("pytorch") and report["reference"] == names[0]
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp32", "int8", "fp32"]
    teacher = report["results"][3]
    assert teacher["name"].startswith("teacher") and teacher["p50_ms"] > 0 and teacher["agreement"] is None
    for row in report["results"][:3]:
        assert not row["error"] and row["p50_ms"] > 0 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert 0.0 <= row["agreement"] <= 1.0
    assert report["results"][0]["agreement"] == 1.0
    assert report["results"][1]["agreement"] > 0.99  # the FP32 ONNX is the same network
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["name"] for r in rows] == names


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert benchmark.main(["--out", str(tmp_path / "b.json")]) == 2
    assert "nothing to benchmark" in capsys.readouterr().err
    assert benchmark.main(["--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
