"""Memory of one benchmarked backend: peak RSS, RSS growth and CUDA memory growth, in MiB.

Peak RSS is the process's real resident-set peak while the backend loaded and ran: VmHWM from
/proc/self/status after resetting it through /proc/self/clear_refs; where that reset is not
permitted, getrusage's ru_maxrss, the peak over the process's whole life (`rss_method` says
which). RSS growth is that peak minus the RSS before loading (VmRSS end minus start without the
reset). CUDA memory growth comes from cuda-python when it can tell.
"""

from __future__ import annotations

import sys
from pathlib import Path


def read_proc_status(text: str | None = None) -> dict[str, int]:
    """VmRSS / VmHWM (kB) from /proc/self/status (or the given text); empty where /proc is absent."""
    if text is None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return {}
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0])
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write "5" to /proc/self/clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def max_rss_kb() -> int | None:
    """getrusage(RUSAGE_SELF).ru_maxrss in kB (Linux reports kB, macOS bytes): the process's lifetime peak."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)


class MemoryProbe:
    """Peak RSS, RSS growth and CUDA memory growth across a block of work, in MiB (module doc)."""

    def __init__(self) -> None:
        self.peak_resettable = reset_peak_rss()
        self.start = read_proc_status()
        self.cuda_start = cuda_used_bytes()

    def finish(self) -> dict:
        end = read_proc_status()
        start_rss = self.start.get("VmRSS")
        if self.peak_resettable and "VmHWM" in end:
            peak_kb, method = end["VmHWM"], "peak: VmHWM reset before loading; growth: peak - VmRSS before"
            growth_kb = peak_kb - start_rss if start_rss is not None else None
        else:
            peak_kb = max_rss_kb()
            method = "peak: ru_maxrss (process lifetime); growth: VmRSS after - VmRSS before (not a peak)"
            growth_kb = end["VmRSS"] - start_rss if "VmRSS" in end and start_rss is not None else None
        cuda_end = cuda_used_bytes()
        cuda = (cuda_end - self.cuda_start) / 2**20 if cuda_end is not None and self.cuda_start is not None else None
        return {"peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
                "rss_growth_mb": None if growth_kb is None else growth_kb / 1024, "rss_method": method,
                "cuda_mb": cuda}


def cuda_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (cuda-python cudaMemGetInfo), None without a GPU."""
    try:
        from cuda.bindings import runtime as cudart

        err, free, total = cudart.cudaMemGetInfo()
        return int(total - free) if int(err) == 0 else None
    except Exception:
        return None
