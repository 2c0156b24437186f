"""Print parameter counts of the registered networks, so a config's cost is known before training.

Example: `python -m lix_train.models.summary --width 0.25 1.0 --encoders resnet18 mobilenetv2`
"""

from __future__ import annotations

import argparse

from .encoders import list_encoders
from .registry import create_model


def parameter_table(
    encoders: list[str], widths: list[float], num_classes: int, decoder_channels: int, x_channels: int
) -> list[dict]:
    """One row per (encoder, width): student, teacher encoder and teacher totals (intermediate fusion)."""
    rows = []
    for encoder in encoders:
        for width in widths:
            common = dict(encoder=encoder, width=width, num_classes=num_classes, decoder_channels=decoder_channels)
            student = create_model("student", **common)
            teacher = create_model("teacher", x_channels=x_channels, **common)
            count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
            rows.append({
                "encoder": encoder, "width": width,
                "student": count(student), "student_encoder": count(student.encoder),
                "decoder_head": count(student.decoder) + count(student.head), "teacher": count(teacher),
                "feature_channels": student.out_channels,
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="python -m lix_train.models.summary",
        description="Print parameter counts of the student and the duplex teacher for each encoder and width.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--encoders", nargs="+", default=list_encoders(), help="Encoder names to list.")
    parser.add_argument("--width", nargs="+", type=float, default=[0.25, 1.0], help="Width multipliers to list.")
    parser.add_argument("--num-classes", type=int, default=14, help="Output classes.")
    parser.add_argument("--decoder-channels", type=int, default=128, help="FPN decoder width.")
    parser.add_argument("--x-channels", type=int, default=3, help="Teacher X channels (3 normals, 1 depth).")
    args = parser.parse_args(argv)
    rows = parameter_table(args.encoders, args.width, args.num_classes, args.decoder_channels, args.x_channels)
    print(
        f"{'encoder':<12} {'width':>5} {'student':>12} {'(encoder)':>12} {'(dec+head)':>11} {'teacher':>12}"
        "  feature channels"
    )
    for r in rows:
        print(
            f"{r['encoder']:<12} {r['width']:>5.2f} {r['student']:>12,} {r['student_encoder']:>12,} "
            f"{r['decoder_head']:>11,} {r['teacher']:>12,}  {r['feature_channels']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
