"""Where a loader worker's time goes per training sample, uncached vs the exact frame cache.

Times, on N evenly spaced training frames of the embedded set with the `synthetic` preset's
transforms (96x320 from 192x640, batch items as a DataLoader worker makes them), each stage of
the uncached item (JPEG / label PNG / depth PNG decode, the X-cache key hash, the X-cache read,
every transform) and the whole item uncached (data.x_cache on) and from the frame cache, as
medians over all samples and repeats, measured round-robin in one run so load bursts on a
shared machine hit both sides alike. Ratios are what to compare; absolute ms vary with load.
The caches go to a temporary folder (removed afterwards), never the user's cache.

    python benchmarks/bench_loader.py                 # 24 frames x 3 repeats
    python benchmarks/bench_loader.py --frames 48 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from lix_train.data.build import build_sources, resolve_root, source_identity
from lix_train.data.dataset import SegmentationDataset
from lix_train.data.frame_cache import _crc, cache_dataset_frames
from lix_train.data.io import read_color_label, read_depth_cm_png, read_rgb
from lix_train.data.sources import FrameSubset, evenly_spaced
from lix_train.data.transforms import build_eval_transforms, build_train_transforms
from lix_train.data.vkitti2 import category_table
from lix_train.data.x_cache import XCache, x_key
from lix_train.experiment import PRESETS_DIR, ExperimentConfig


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24, help="training frames sampled (evenly spaced)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the frames")
    parser.add_argument("--preset", default="synthetic", help="preset whose data section is used")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker

    from lix_train.config import resolve

    cfg = resolve(ExperimentConfig, PRESETS_DIR, args.preset, None, {}).data
    root = resolve_root(cfg)
    full = build_sources(cfg, ("train",), root)["train"]
    source = FrameSubset(full, evenly_spaced(len(full), args.frames))
    modality, tcfg = cfg.modality, cfg.transforms
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        xc = XCache(Path(tmp) / "x")
        plain = SegmentationDataset(source, modality, build_train_transforms(tcfg), max_depth=cfg.max_depth,
                                    x_cache=xc)
        cached = SegmentationDataset(source, modality, build_train_transforms(tcfg), max_depth=cfg.max_depth)
        _, build_s = timed(lambda: cache_dataset_frames(cached, Path(tmp) / "frames", source_identity(cfg),
                                                        progress=False))
        plain_eval = SegmentationDataset(source, modality, build_eval_transforms(tcfg), max_depth=cfg.max_depth,
                                         x_cache=xc)
        cached_eval = SegmentationDataset(source, modality, build_eval_transforms(tcfg), max_depth=cfg.max_depth,
                                          frame_cache=cached.frame_cache)
        for i in range(len(source)):  # warm the X cache and the page cache (what steady-state epochs see)
            plain.frame(source[i])
            cached.frame_cache.frame(i)
        times: dict[str, list[float]] = defaultdict(list)
        stages = build_train_transforms(tcfg).transforms
        for repeat in range(args.repeats):
            for i in range(len(source)):
                rgb_path, label_path, depth_path, colors, _ = source.frame_files(i)
                rgb, t = timed(lambda: read_rgb(rgb_path))
                times["decode RGB (JPEG)"].append(t)
                table = category_table(colors)
                label, t = timed(lambda: read_color_label(label_path, table, rgb.shape[:2]))
                times["decode label (colour PNG -> ids)"].append(t)
                depth, t = timed(lambda: read_depth_cm_png(depth_path, rgb.shape[:2]))
                times["read depth (16-bit PNG)"].append(t)
                sample = source[i]
                key, t = timed(lambda: x_key(sample.depth, sample.intrinsics, modality, plain.baseline_m,
                                             cfg.max_depth))
                times["X cache key (hash depth)"].append(t)
                _, t = timed(lambda: xc.get_or_compute(key, lambda: None))
                times["X cache read (.npy)"].append(t)
                frame = plain.frame(sample)
                rng = np.random.default_rng([repeat, i])
                for stage in stages:
                    frame, t = timed(lambda: stage(frame, rng))
                    times[f"  {type(stage).__name__}"].append(t)
                _, t = timed(lambda: cached.frame_cache.frame(i))
                times["frame cache read (3 memmap slices)"].append(t)
                f = cached.frame_cache.frame(i)
                _, t = timed(lambda: (_crc(f.image), _crc(f.label), _crc(f.x)))
                times["frame cache CRC check (1st read/process)"].append(t)
                for name, ds in (("uncached", plain), ("cached", cached), ("eval uncached", plain_eval),
                                 ("eval cached", cached_eval)):
                    torch.manual_seed(repeat * 1000 + i)
                    _, t = timed(lambda: ds[i])
                    times[f"whole item, {name}"].append(t)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    base = ms["whole item, uncached"]
    print(f"{len(source)} train frames x {args.repeats} repeats, {modality}, {tcfg.size} from the stored size; "
          f"frame cache built in {build_s:.1f} s")
    print(f"{'stage (median)':<44}{'ms/sample':>10}{'% of uncached item':>20}")
    for name, value in ms.items():
        print(f"{name:<44}{value:>10.2f}{100 * value / base:>19.0f}%")
    print(f"train item: uncached / cached = {base / ms['whole item, cached']:.2f}x; eval item: "
          f"{ms['whole item, eval uncached'] / ms['whole item, eval cached']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
