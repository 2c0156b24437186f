"""The node's health on /diagnostics: rates, latency, drops, backend (diagnostic_updater is not on PyPI).

`PipelineCounters` is incremented from the callbacks and the inference thread; each diagnostics
tick takes a `CounterSnapshot`, and `summarize` turns two consecutive snapshots plus the latency
summaries into the numbers and level that `diagnostic_status` publishes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

__all__ = ["PipelineCounters", "CounterSnapshot", "HealthSummary", "summarize", "diagnostic_status",
           "diagnostic_array"]

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels (bytes in the message)


@dataclass(frozen=True)
class CounterSnapshot:
    """Totals since start at monotonic time `time_s`."""

    time_s: float
    received: int = 0
    published: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0


class PipelineCounters:
    """Thread-safe running totals of the frame pipeline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {f.name: 0 for f in fields(CounterSnapshot) if f.name != "time_s"}

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._totals[name] += count

    def snapshot(self, time_s: float) -> CounterSnapshot:
        with self._lock:
            return CounterSnapshot(time_s, **self._totals)


@dataclass(frozen=True)
class HealthSummary:
    """What one diagnostics tick reports."""

    level: int
    message: str
    input_hz: float
    output_hz: float
    totals: CounterSnapshot


def summarize(previous: CounterSnapshot, current: CounterSnapshot, worker_alive: bool = True) -> HealthSummary:
    """Rates over the interval between two snapshots, and the level: ERROR when the inference thread
    is gone, WARN when frames came in but none went out, or some were rejected or failed."""
    elapsed = max(current.time_s - previous.time_s, 1e-9)
    input_hz = (current.received - previous.received) / elapsed
    output_hz = (current.published - previous.published) / elapsed
    rejected = current.rejected - previous.rejected
    failed = current.failed - previous.failed
    if not worker_alive:
        level, message = ERROR, "inference thread stopped"
    elif current.received > previous.received and current.published == previous.published:
        level, message = WARN, "receiving images but publishing no masks"
    elif rejected or failed:
        level, message = WARN, f"{rejected} images rejected, {failed} failed in the last {elapsed:.1f} s"
    elif current.received == previous.received:
        level, message = OK, "waiting for images"
    else:
        level, message = OK, "segmenting"
    return HealthSummary(level, message, input_hz, output_hz, current)


def diagnostic_status(name: str, hardware_id: str, summary: HealthSummary, latency: dict, inference: dict,
                      extra: dict[str, str] | None = None):
    """A diagnostic_msgs/DiagnosticStatus with rates, end-to-end and inference latency, totals and extras."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    totals = summary.totals
    values = {
        "input_rate_hz": f"{summary.input_hz:.2f}",
        "output_rate_hz": f"{summary.output_hz:.2f}",
        "latency_p50_ms": f"{latency.get('p50_ms', 0.0):.2f}",
        "latency_p95_ms": f"{latency.get('p95_ms', 0.0):.2f}",
        "inference_p50_ms": f"{inference.get('p50_ms', 0.0):.2f}",
        "inference_p95_ms": f"{inference.get('p95_ms', 0.0):.2f}",
        "frames_received": str(totals.received),
        "frames_published": str(totals.published),
        "frames_dropped": str(totals.dropped),
        "frames_rejected": str(totals.rejected),
        "frames_failed": str(totals.failed),
        **(extra or {}),
    }
    return DiagnosticStatus(level=bytes([summary.level]), name=name, message=summary.message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def diagnostic_array(stamp, statuses):
    from diagnostic_msgs.msg import DiagnosticArray

    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = list(statuses)
    return array
