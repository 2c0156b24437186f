"""The benchmark's results as a fixed-width text table and as CSV."""

from __future__ import annotations

import csv
import io

from .results import Result

CSV_FIELDS = ("name", "backend", "precision", "artefact", "load_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "fps",
              "peak_rss_mb", "rss_growth_mb", "rss_method", "cuda_mb", "agreement", "miou_vs_reference",
              "miou_vs_labels", "error")


def format_table(results: list[Result], reference: str) -> str:
    """A fixed-width text table of the figures (None shown as '-')."""
    columns = [("backend", "name", "{}"), ("load s", "load_s", "{:.2f}"), ("p50 ms", "p50_ms", "{:.2f}"),
               ("p95 ms", "p95_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"), ("FPS", "fps", "{:.1f}"),
               ("peak RSS MiB", "peak_rss_mb", "{:.1f}"), ("RSS growth MiB", "rss_growth_mb", "{:.1f}"),
               ("CUDA MiB", "cuda_mb", "{:.1f}"),
               ("agree %", "agreement", "{:.2%}"), ("mIoU vs ref", "miou_vs_reference", "{:.2f}"),
               ("mIoU vs GT", "miou_vs_labels", "{:.2f}")]
    rows = []
    for r in results:
        cells = []
        for _, attr, fmt in columns:
            value = getattr(r, attr)
            cells.append("-" if value is None else fmt.format(value).rstrip("%") if attr == "agreement"
                         else fmt.format(value))
        if r.error:
            cells[1:] = [f"ERROR {r.error}"] + [""] * (len(cells) - 2)
        rows.append(cells)
    headers = [c[0] for c in columns]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
                     + [f"(agreement and 'mIoU vs ref' against: {reference})"])


def to_csv(results: list[Result]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    return buffer.getvalue()
