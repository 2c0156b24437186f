"""Thread-safe latency record over a bounded window (no growth in a long-running node)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["LatencyStats", "summarize_ms"]


def summarize_ms(values_ms) -> dict[str, float]:
    """mean / p50 / p95 / p99 / max of a non-empty set of latencies in ms: the one summary the
    runtime, the deployment benchmark and the ROS benchmark all report from."""
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latencies to summarise")
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"mean_ms": float(values.mean()), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "max_ms": float(values.max())}


class LatencyStats:
    """The last `window` latencies in milliseconds and their summary (count, mean, p50, p95, max)."""

    def __init__(self, window: int = 1000):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._values: deque[float] = deque(maxlen=window)
        self._total = 0
        self._lock = threading.Lock()

    def add(self, milliseconds: float) -> None:
        with self._lock:
            self._values.append(float(milliseconds))
            self._total += 1

    def reset(self) -> None:
        with self._lock:
            self._values.clear()
            self._total = 0

    def summary(self) -> dict[str, float | int]:
        """{"count": calls ever, "window": values summarised, "mean_ms", "p50_ms", "p95_ms", "max_ms"}."""
        with self._lock:
            values = np.asarray(self._values, dtype=np.float64)
            total = self._total
        if values.size == 0:
            return {"count": total, "window": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
        stats = summarize_ms(values)
        return {"count": total, "window": int(values.size),
                **{k: stats[k] for k in ("mean_ms", "p50_ms", "p95_ms", "max_ms")}}
