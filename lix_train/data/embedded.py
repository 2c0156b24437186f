"""The embedded default dataset: a fixed synthetic config, generated once into a cache, split by scene.

Nothing is downloaded: the first call renders the drives (lix_train.data.synthetic) into
`$LIX_SEG_CACHE` (else ~/.cache/lix-seg) under a name that encodes the generator version and a
hash of the config, so a changed generator or config never reads a stale cache. Generation goes
into a temporary directory that is renamed into place only when complete, under a lock file, so
concurrent callers neither corrupt nor duplicate it. The root holds vKITTI2-format scenes plus
`splits.json` (train / val / test scene names: frames of one drive never leak across splits) and
`embedded.json` (config, timings, class pixel counts).

The dataset `synthetic` (SPEC) is this set when data.root is empty, or any generated set with a
splits.json (python -m lix_train.data.synthetic): vKITTI2-format data, read with data.vkitti2's
layout, its scenes from splits.json unless data.*_scenes name them.

    python -m lix_train.data.embedded            # generate (if needed) and print a summary
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lix_train.config import option
from lix_train.data.classes import VKITTI2
from lix_train.data.errors import DatasetError
from lix_train.data.registry import DatasetSpec
from lix_train.data.synthetic import (
    GENERATOR_VERSION, SIDEWALK_NOTE, SPLITS_FILE, DriveConfig, SyntheticConfig, split_scenes, write_atomic,
    write_dataset,
)
from lix_train.data.vkitti2 import OPTIONS as VKITTI2_OPTIONS
from lix_train.data.vkitti2 import vkitti2_format_sources
from lix_train.locking import exclusive

if TYPE_CHECKING:
    from lix_train.data.config import DataConfig

CACHE_ENV = "LIX_SEG_CACHE"
MANIFEST_FILE = "embedded.json"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EmbeddedConfig(DriveConfig):
    """The default set. Sized so that generation takes about a minute on 2 cores."""

    scenes: int = DriveConfig.redefault("scenes", 20)
    frames: int = DriveConfig.redefault("frames", 30)
    variations: tuple[str, ...] = DriveConfig.redefault("variations", ("clone", "overcast", "sunset"))
    val_scenes: int = option(3, "drives in the val split")
    test_scenes: int = option(3, "drives in the test split")

    def __post_init__(self):
        super().__post_init__()  # sizes, seed, variations, ambiguity
        for name in ("val_scenes", "test_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.scenes - self.val_scenes - self.test_scenes < 1:
            raise ValueError(
                f"scenes ({self.scenes}) must exceed val_scenes + test_scenes "
                f"({self.val_scenes} + {self.test_scenes}) to leave a training scene"
            )

    def synthetic(self) -> SyntheticConfig:
        return SyntheticConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DriveConfig)})

    def digest(self) -> str:
        """Hash of the generator version and the config: the cache key."""
        blob = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def dirname(self) -> str:
        return f"embedded-v{GENERATOR_VERSION}-{self.digest()}"


def default_cache_dir() -> Path:
    """$LIX_SEG_CACHE, else ~/.cache/lix-seg."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lix-seg"


def embedded_splits(root: str | Path) -> dict[str, list[str]]:
    """Scene names per split ("train", "val", "test") from ROOT/splits.json."""
    path = Path(root) / SPLITS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "missing; generate the dataset with ensure_embedded_dataset()") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(path, f"unreadable splits file ({err})") from None
    if not isinstance(data, dict) or set(data) != set(SPLITS) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise DatasetError(path, f"expected an object with lists of scene names under {list(SPLITS)}")
    return {k: list(data[k]) for k in SPLITS}


def is_complete(root: Path) -> bool:
    return (root / MANIFEST_FILE).is_file() and (root / SPLITS_FILE).is_file()


def ensure_embedded_dataset(cache_dir: str | Path | None = None, config: EmbeddedConfig | None = None,
                            progress: bool = True, workers: int | None = None) -> Path:
    """Path of the embedded dataset root, generating it on first use.

    cache_dir: where datasets are cached (default: default_cache_dir()).
    workers:   render processes for a generation (default os.cpu_count()).
    """
    config = config or EmbeddedConfig()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / config.dirname()
    if is_complete(final):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with exclusive(cache / f"{config.dirname()}.lock"):
        if is_complete(final):  # another process finished while we waited
            return final
        if progress:
            print(f"generating the embedded dataset into {final} (first use; cached afterwards)", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{config.dirname()}.", dir=cache))
        try:
            start = time.perf_counter()
            summary = write_dataset(tmp, config.synthetic(), workers=workers, progress=progress)
            splits = split_scenes(config.synthetic().scene_names, config.val_scenes, config.test_scenes, config.seed)
            write_atomic(tmp / SPLITS_FILE, (json.dumps(splits, indent=2) + "\n").encode())
            seconds = time.perf_counter() - start
            manifest = {
                "config": asdict(config), "generator_version": GENERATOR_VERSION, "splits": splits,
                "generation_seconds": round(seconds, 2), "note": SIDEWALK_NOTE, "synthetic": summary,
            }
            write_atomic(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
            if final.exists():  # an incomplete leftover (a killed run before the rename cannot leave one)
                shutil.rmtree(final)
            try:
                os.rename(tmp, final)
            except OSError:
                if not is_complete(final):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # lost a lock-less race to an identical result
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if progress:
        print(f"generated the embedded dataset in {seconds:.1f} s: {final}", flush=True)
    return final


def dataset_size_bytes(root: Path) -> int:
    """Bytes on disk under root, counting hard-linked files once."""
    seen, total = set(), 0
    for path in root.rglob("*"):
        st = path.lstat()
        if path.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def splits_file_scenes(root: Path) -> dict[str, tuple[str, ...]]:
    """Scenes per split from a generated set's splits.json: synthetic's default data.*_scenes."""
    if not (root / SPLITS_FILE).is_file():
        raise DatasetError(root / SPLITS_FILE, "missing; a synthetic set needs its splits.json, or give "
                           "data.train_scenes, data.val_scenes and data.test_scenes")
    return {k: tuple(v) for k, v in embedded_splits(root).items()}


def synthetic_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    """{split: VKITTI2Source} of a generated set: scenes from data.*_scenes, else its splits.json."""
    return vkitti2_format_sources(cfg, root, splits, default_scenes=splits_file_scenes)


SPEC = DatasetSpec(
    "synthetic", VKITTI2, synthetic_sources, options=VKITTI2_OPTIONS, vkitti2_format=True,
    default_root=lambda cfg, progress: ensure_embedded_dataset(cfg.cache_dir, progress=progress),
    default_root_identity=lambda cfg: f"embedded/{EmbeddedConfig().dirname()}",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="python -m lix_train.data.embedded",
        description="Generate the embedded default dataset into the cache if it is missing, then print where "
        "it is, how long generation took, its size, splits and class pixel shares.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"cache directory; none = ${CACHE_ENV} or ~/.cache/lix-seg")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    root = ensure_embedded_dataset(args.cache_dir, progress=not args.no_progress, workers=args.workers)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    counts = manifest["synthetic"]["class_pixel_counts"]
    total = sum(counts.values())
    print(f"root: {root}")
    print(f"generation: {manifest['generation_seconds']} s with {manifest['synthetic']['workers']} workers")
    print(f"size on disk: {dataset_size_bytes(root) / 2**20:.1f} MiB, "
          f"{manifest['synthetic']['images_written']} images")
    for split, scenes in embedded_splits(root).items():
        print(f"{split}: {len(scenes)} scenes x {manifest['config']['frames']} frames x "
              f"{len(manifest['config']['variations'])} variations: {' '.join(scenes)}")
    print("class pixel shares:")
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<13s} {100.0 * count / max(total, 1):6.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
