"""Timing one target on the frames, and scoring its labels against the reference and the ground truth."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lix_deploy import accuracy
from lix_deploy.runtime.latency import summarize_ms

from .memory import MemoryProbe
from .targets import Target


def latency_summary(latencies_ms: np.ndarray) -> dict[str, float]:
    """p50 / p95 / p99 / mean in ms and FPS (1000 / mean) of a set of single-frame latencies."""
    if np.asarray(latencies_ms).size == 0:
        raise ValueError("no latencies to summarise (--frames must be >= 1)")
    stats = summarize_ms(latencies_ms)
    mean = stats["mean_ms"]
    return {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "p99_ms": stats["p99_ms"], "mean_ms": mean,
            "fps": 1000.0 / mean if mean > 0 else float("inf")}


@dataclass
class Result:
    name: str
    backend: str
    precision: str
    artefact: str
    load_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    fps: float | None = None
    peak_rss_mb: float | None = None  # the process's resident-set peak (absolute)
    rss_growth_mb: float | None = None  # how far that peak rose above the RSS before loading
    rss_method: str = ""
    cuda_mb: float | None = None
    agreement: float | None = None
    miou_vs_reference: float | None = None
    miou_vs_labels: float | None = None
    error: str = ""
    comparable: bool = True
    labels: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("labels")
        return data


def run_target(target: Target, frames: np.ndarray, timed: int, warmup: int) -> Result:
    """Load, warm up, time `timed` single-frame calls (cycling through `frames`), keep one pass of labels."""
    result = Result(target.name, target.backend, target.precision, target.artefact, comparable=target.comparable)
    probe = MemoryProbe()
    close = lambda: None  # noqa: E731
    try:
        start = time.perf_counter()
        predict, close = target.load()
        result.load_s = time.perf_counter() - start
        for i in range(warmup):
            predict(frames[i % len(frames): i % len(frames) + 1])
        latencies = np.empty(timed)
        labels = [None] * len(frames)
        for i in range(timed):
            k = i % len(frames)
            begin = time.perf_counter()
            out = predict(frames[k:k + 1])
            latencies[i] = (time.perf_counter() - begin) * 1000.0
            if labels[k] is None:
                labels[k] = np.asarray(out)[0]
        for k in range(len(frames)):  # frames the timed loop did not reach
            if labels[k] is None:
                labels[k] = np.asarray(predict(frames[k:k + 1]))[0]
        result.labels = np.stack(labels)
        for name, value in latency_summary(latencies).items():
            setattr(result, name, value)
    except Exception as err:  # one broken backend must not hide the others' figures
        result.error = f"{type(err).__name__}: {str(err)[:300]}"
    finally:
        try:
            close()
        finally:
            memory = probe.finish()
            result.peak_rss_mb, result.rss_growth_mb = memory["peak_rss_mb"], memory["rss_growth_mb"]
            result.rss_method, result.cuda_mb = memory["rss_method"], memory["cuda_mb"]
    return result


def score(results: list[Result], reference: Result | None, ground_truth: np.ndarray | None, num_classes: int) -> None:
    """Fill agreement / mIoU against the reference's labels and against ground truth."""
    for result in results:
        if result.labels is None:
            continue
        if not result.comparable:
            continue
        if ground_truth is not None:
            result.miou_vs_labels = accuracy.mean_iou(accuracy.confusion_matrix(result.labels, ground_truth,
                                                                                num_classes))
        if reference is not None and reference.labels is not None:
            result.agreement = accuracy.pixel_agreement(result.labels, reference.labels)
            result.miou_vs_reference = accuracy.mean_iou(accuracy.confusion_matrix(result.labels, reference.labels,
                                                                                   num_classes))
