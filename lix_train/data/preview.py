"""Preview one frame of a vKITTI2-format dataset: RGB | depth | surface normals | labels.

The figure is how a reader checks at a glance that geometry separates what colour does not:
depth is colour-mapped (log scale, sky black), normals come from the depth and intrinsics
exactly as the teacher's X input does (lix_train.data.modalities.surface_normals) and are shown
as (n + 1) / 2, labels use the class palette with a legend.

    python -m lix_train.data.preview --out runs/demo           # the embedded set, generated on first use
    python -m lix_train.data.preview --out runs/p --root data/synth --index 12
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from lix_train.data.classes import VKITTI2, ClassSet
from lix_train.data.sample import Sample

SKY_DEPTH_M = 655.0  # vKITTI2 stores sky as 65535 cm; anything this far is treated as no surface


def depth_colormap(depth: np.ndarray, far_m: float = SKY_DEPTH_M) -> np.ndarray:
    """(H, W, 3) uint8: log-depth through matplotlib's 'magma' (near bright, far purple), sky / unknown black."""
    from matplotlib import colormaps

    valid = (depth > 0) & (depth < far_m) & np.isfinite(depth)
    out = np.zeros(depth.shape + (3,), np.uint8)
    if not valid.any():
        return out
    logd = np.log(depth[valid])
    lo, hi = np.percentile(logd, [1, 99])
    # near -> 1 (bright); far stops at 0.15 so it stays distinguishable from the black sky
    t = 1.0 - 0.85 * np.clip((logd - lo) / max(hi - lo, 1e-6), 0, 1)
    out[valid] = (colormaps["magma"](t)[:, :3] * 255).astype(np.uint8)
    return out


def normals_image(depth: np.ndarray, intrinsics: np.ndarray, far_m: float = SKY_DEPTH_M) -> np.ndarray:
    """(H, W, 3) uint8 camera-frame normals as (n + 1) / 2; black where unknown (sky, no depth)."""
    from lix_train.data.modalities import surface_normals

    d = np.where(depth < far_m, depth, 0.0).astype(np.float32)
    n = surface_normals(d, intrinsics)
    img = ((n + 1.0) * 0.5 * 255.0 + 0.5).astype(np.uint8)
    img[~np.any(n != 0, axis=-1)] = 0
    return img


def preview_png(sample: Sample, class_set: ClassSet = VKITTI2, scale: float = 1.0) -> bytes:
    """PNG bytes of the 2 x 2 figure (RGB, depth, normals, labels) with a class legend.

    scale: output pixels per image pixel (below 1 shrinks the file, e.g. for a README).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if sample.depth is None or sample.intrinsics is None:
        raise ValueError(f"{sample.name}: the preview needs depth and intrinsics")
    h, w = sample.label.shape
    panels = [
        ("RGB", sample.rgb),
        ("depth (log, near = bright)", depth_colormap(sample.depth)),
        ("surface normals (n + 1) / 2", normals_image(sample.depth, sample.intrinsics)),
        ("labels", class_set.colorize(sample.label)),
    ]
    if not 0.1 <= scale <= 4.0:
        raise ValueError(f"scale must be in [0.1, 4], got {scale}")
    dpi = 100
    legend_rows = 2
    fig_w = 2 * w / dpi
    fig_h = (2 * h + 2 * 22) / dpi + 0.25 * legend_rows + 0.3
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi * scale)
    top = 1.0 - 0.3 / fig_h
    legend_h = (0.25 * legend_rows + 0.05) / fig_h
    grid = fig.add_gridspec(2, 2, left=0.0, right=1.0, bottom=legend_h, top=top, wspace=0.01, hspace=0.12)
    for i, (title, image) in enumerate(panels):
        ax = fig.add_subplot(grid[i // 2, i % 2])
        # labels stay crisp; the continuous panels are smoothed when the figure shrinks
        ax.imshow(image, interpolation="nearest" if title == "labels" or scale >= 1 else "antialiased")
        ax.set_title(title, fontsize=9, pad=2)
        ax.set_axis_off()
    fig.suptitle(sample.name, fontsize=9, y=1.0 - 0.05 / fig_h, va="top")
    handles = [Patch(facecolor=np.array(c) / 255.0, edgecolor="k", linewidth=0.3, label=n)
               for n, c in zip(class_set.names, class_set.colors)]
    fig.legend(handles=handles, loc="lower center", ncol=int(np.ceil(len(handles) / legend_rows)), fontsize=8,
               frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi * scale)
    plt.close(fig)
    return buf.getvalue()


def write_preview(out_dir: str | Path, root: str | Path, index: int = 0, scale: float = 1.0) -> Path:
    """Read frame `index` of the vKITTI2-format dataset at root and write out_dir/preview.png."""
    from lix_train.data.synthetic import write_atomic
    from lix_train.data.vkitti2 import VKITTI2Source

    source = VKITTI2Source(root)
    if not -len(source) <= index < len(source):
        raise IndexError(f"--index {index} is out of range: {root} has {len(source)} frames")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "preview.png"
    write_atomic(path, preview_png(source[index], source.class_set, scale))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="python -m lix_train.data.preview",
        description="Write DIR/preview.png: one frame as RGB | depth | surface normals | labels with a class "
        "legend. Without --root it uses the embedded synthetic dataset, generating it on first use.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write preview.png into")
    parser.add_argument("--root", type=Path, default=None,
                        help="vKITTI2-format dataset root; none = the embedded dataset")
    parser.add_argument("--index", type=int, default=0, help="frame index in the dataset's sorted frame list")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="figure pixels per image pixel; e.g. 0.75 keeps a README image small")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache of the embedded dataset; none = $LIX_SEG_CACHE or ~/.cache/lix-seg")
    args = parser.parse_args(argv)
    if not 0.1 <= args.scale <= 4.0:
        parser.error(f"--scale must be in [0.1, 4], got {args.scale}")
    root = args.root
    if root is None:
        from lix_train.data.embedded import ensure_embedded_dataset

        root = ensure_embedded_dataset(args.cache_dir, progress=True)
    try:
        path = write_preview(args.out, root, args.index, args.scale)
    except IndexError as err:
        parser.error(str(err))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
