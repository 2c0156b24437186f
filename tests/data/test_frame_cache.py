"""The frame cache (data.frame_cache): exact items, rebuilt when damaged or stale, safe under concurrency."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from data_trees import vkitti2_path, write_image, write_vkitti2_tree
from torch.utils.data import DataLoader

from lix_train.config import from_dict
from lix_train.data.build import ZeroX, build_datasets
from lix_train.data.classes import VKITTI2
from lix_train.data.config import DataConfig
from lix_train.data.dataset import SegmentationDataset
from lix_train.data.errors import DatasetError
from lix_train.data.frame_cache import INDEX_FILE, FrameCacheError, cache_dataset_frames, ensure_cache
from lix_train.data.sample import Sample, intrinsics_matrix
from lix_train.data.transforms import Frame, build_eval_transforms, build_train_transforms
from lix_train.experiment import NOT_RESULT_AFFECTING, PRESETS_DIR, ExperimentConfig, teacher_hash

SCENES = {"train": "Scene01", "val": "Scene02", "test": "Scene03"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vkitti2")
    write_vkitti2_tree(root, scenes=tuple(SCENES.values()), cameras=("Camera_0",), frames=3)
    return root


def config(root: Path, cache: Path, **changes) -> DataConfig:
    base = {"dataset": "vkitti2", "root": str(root), "cache_dir": str(cache), "frame_cache": True,
            **{f"{split}_scenes": [scene] for split, scene in SCENES.items()},
            "transforms": {"size": [16, 24], "crop_size": [16, 24], "scale_range": [0.75, 2.5]}}
    return from_dict(DataConfig, {**base, **changes})


def items(dataset, seed: int = 0) -> list[dict]:
    """Two epochs' items (the second reads frames whose checksums were already verified)."""
    torch.manual_seed(seed)
    return [dataset[i] for _ in range(2) for i in range(len(dataset))]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and x["name"] == y["name"]
        for key in ("image", "x", "label"):
            if key in x:
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), (key, x["name"])


def frames_dir(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "frames").iterdir() if p.is_dir())


@pytest.mark.parametrize("modality", ["normals", "disparity", None])
def test_items_are_bit_identical_to_the_uncached_pipeline(data_root, tmp_path, modality):
    cached = build_datasets(config(data_root, tmp_path), modality)
    plain = build_datasets(config(data_root, tmp_path, frame_cache=False), modality)
    for split in ("train", "val", "test"):
        assert cached[split].frame_cache is not None and plain[split].frame_cache is None
        cached[split].frame = lambda sample: pytest.fail("a cached frame was read uncached")
        assert_same(items(cached[split], seed=3), items(plain[split], seed=3))
    assert len(frames_dir(tmp_path)) == 3  # one cache per split
    again = build_datasets(config(data_root, tmp_path), modality, ("train",))["train"]
    assert not again.frame_cache.built  # opened, not rebuilt


def test_zero_x_and_frame_limits_compose(data_root, tmp_path):
    zero = build_datasets(config(data_root, tmp_path, zero_x=True), "normals", ("train",))["train"]
    assert isinstance(zero, ZeroX) and torch.count_nonzero(zero[0]["x"]) == 0
    plain = build_datasets(config(data_root, tmp_path), "normals", ("train",))["train"]
    assert not plain.frame_cache.built  # zero_x does not change what is cached
    limited = build_datasets(config(data_root, tmp_path, max_train_frames=2), "normals", ("train",))["train"]
    assert limited.frame_cache.built and len(limited) == 2
    assert_same(items(limited), items(build_datasets(config(data_root, tmp_path, max_train_frames=2,
                                                            frame_cache=False), "normals", ("train",))["train"]))


def test_key_changes_with_modality_and_frames_and_a_changed_file_rebuilds(data_root, tmp_path):
    def directory(modality="normals", **changes):
        train = build_datasets(config(data_root, tmp_path, **changes), modality, ("train",))["train"]
        return train.frame_cache.directory

    base = directory()
    assert directory() == base
    others = {directory(modality=None), directory(modality="depth"), directory(max_train_frames=2),
              directory(max_depth=50.0), directory(on_error="skip")}
    assert base not in others and len(others) == 5
    root = tmp_path / "copy"
    write_vkitti2_tree(root, scenes=tuple(SCENES.values()), cameras=("Camera_0",), frames=3)
    first = build_datasets(config(root, tmp_path), "normals", ("train",))["train"]
    time.sleep(0.01)
    write_image(vkitti2_path(root, "rgb", 1), np.full((24, 40, 3), 77, np.uint8))  # edited in place
    edited = build_datasets(config(root, tmp_path), "normals", ("train",))["train"]
    assert edited.frame_cache.built and edited.frame_cache.directory == first.frame_cache.directory
    assert_same(items(edited), items(build_datasets(config(root, tmp_path, frame_cache=False), "normals",
                                                    ("train",))["train"]))


@pytest.mark.parametrize("damage", ["truncate", "garbage_index", "missing_array"])
def test_an_unreadable_cache_is_rebuilt(data_root, tmp_path, damage, caplog):
    cfg = config(data_root, tmp_path)
    directory = build_datasets(cfg, "normals", ("train",))["train"].frame_cache.directory
    if damage == "truncate":
        with open(directory / "x.npy", "r+b") as f:
            f.truncate(1000)
    elif damage == "garbage_index":
        (directory / INDEX_FILE).write_text("{not json")
    else:
        (directory / "label.npy").unlink()
    killed = directory.parent / f".{directory.name}.abc.tmp"  # what a build killed mid-way leaves
    killed.mkdir()
    with caplog.at_level(logging.WARNING):
        rebuilt = build_datasets(cfg, "normals", ("train",))["train"]
    assert rebuilt.frame_cache.built and "rebuilding" in caplog.text and not killed.exists()
    assert_same(items(rebuilt), items(build_datasets(config(data_root, tmp_path, frame_cache=False), "normals",
                                                     ("train",))["train"]))


def test_damaged_bytes_are_never_served_and_the_next_run_rebuilds(data_root, tmp_path, caplog):
    cfg = config(data_root, tmp_path)
    directory = build_datasets(cfg, "normals", ("train",))["train"].frame_cache.directory
    with open(directory / "x.npy", "r+b") as f:  # same length, different bits in frame 0's X
        f.seek(200)
        f.write(b"\x7f" * 64)
    cached = build_datasets(cfg, "normals", ("train",))["train"]
    assert not cached.frame_cache.built  # looks fine from outside
    with caplog.at_level(logging.WARNING):
        got = items(cached)
    assert "damaged" in caplog.text
    assert_same(got, items(build_datasets(config(data_root, tmp_path, frame_cache=False), "normals",
                                          ("train",))["train"]))
    assert not (directory / INDEX_FILE).exists()
    assert build_datasets(cfg, "normals", ("train",))["train"].frame_cache.built


def test_works_with_two_loader_workers(data_root, tmp_path):
    cached = build_datasets(config(data_root, tmp_path), "normals", ("train",))["train"]
    cached.frame_cache.frame(0)  # memmaps open here must not travel to the workers
    state = pickle.loads(pickle.dumps(cached))
    assert state.frame_cache._arrays is None
    plain = build_datasets(config(data_root, tmp_path, frame_cache=False), "normals", ("train",))["train"]

    def batches(dataset):
        loader = DataLoader(dataset, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(5))
        return [b for b in loader]

    for a, b in zip(batches(cached), batches(plain), strict=True):
        assert a["name"] == b["name"]
        for key in ("image", "x", "label"):
            assert torch.equal(a[key], b[key])


# --------------------------------------------------------------------------- in-memory sources


class SizedSource:
    """Frames of two sizes (a ragged split), some of them unreadable."""

    class_set = VKITTI2
    has_depth = True

    def __init__(self, n: int = 5, broken: tuple[int, ...] = ()):
        self.names = [f"mem/{i}" for i in range(n)]
        self.broken = set(broken)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        if i in self.broken:
            raise DatasetError(f"/data/{i}.png", "truncated PNG")
        h, w = (20, 30) if i % 2 else (26, 34)
        rng = np.random.default_rng(i)
        depth = rng.uniform(2, 40, (h, w)).astype(np.float32)
        return Sample(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), rng.integers(0, 14, (h, w), dtype=np.uint8),
                      depth, intrinsics_matrix(30.0, 30.0, w / 2, h / 2), self.names[i])


def memory_dataset(train: bool = True, **kwargs) -> SegmentationDataset:
    from lix_train.data.transforms import TransformConfig

    tc = TransformConfig(size=(16, 24), crop_size=(16, 24))
    return SegmentationDataset(SizedSource(broken=kwargs.pop("broken", ())), "normals",
                               build_train_transforms(tc) if train else build_eval_transforms(tc), **kwargs)


@pytest.mark.parametrize("train", [True, False])
def test_frames_of_different_sizes_are_stored_ragged(tmp_path, caplog, train):
    cached = memory_dataset(train)
    with caplog.at_level(logging.INFO):
        cache_dataset_frames(cached, tmp_path, {"test": "ragged"}, progress=False)
    assert "stored ragged" in caplog.text
    assert_same(items(cached), items(memory_dataset(train)))


def test_skipped_frames_behave_as_without_the_cache(tmp_path):
    cached = memory_dataset(on_error="skip", broken=(1, 4))
    cache_dataset_frames(cached, tmp_path, {"test": "skip"}, progress=False)
    assert sorted(cached.frame_cache.errors) == [1, 4]
    plain = memory_dataset(on_error="skip", broken=(1, 4))
    assert_same(items(cached), items(plain))
    assert cached.skipped == plain.skipped == 2


def test_a_bad_frame_stops_the_build_naming_the_file_and_leaves_nothing(tmp_path):
    with pytest.raises(DatasetError, match=r"/data/3\.png: truncated PNG"):
        cache_dataset_frames(memory_dataset(broken=(3,)), tmp_path, {"test": "raise"}, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(FrameCacheError, match=r"not enough disk space.*set data\.frame_cache false") as err:
        cache_dataset_frames(memory_dataset(), tmp_path, {"test": "full"}, progress=False)
    assert err.value.path == tmp_path
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_a_disk_that_fills_up_while_writing_names_the_file(tmp_path, monkeypatch):
    import builtins
    import errno

    from lix_train.data import frame_cache

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            if len(memoryview(data).cast("B")) > 128:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(frame_cache, "open", lambda *a, **k: Full(builtins.open(*a, **k)), raising=False)
    with pytest.raises(FrameCacheError, match=r"rgb\.npy: cannot write the frame cache \(No space left on device\); "
                                              r"free some space"):
        cache_dataset_frames(memory_dataset(), tmp_path, {"test": "filling"}, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_a_read_only_cache_place_is_a_clear_error(tmp_path, monkeypatch):
    from lix_train.data import frame_cache

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(frame_cache, "exclusive", refuse)  # what opening the lock file does there
    with pytest.raises(FrameCacheError, match=r"\.lock: cannot create the frame cache \(Permission denied\).*"
                                              r"data\.cache_dir"):
        cache_dataset_frames(memory_dataset(), tmp_path, {"test": "ro"}, progress=False)


# --------------------------------------------------------------------------- two processes at once


def _slow_frame(i: int) -> Frame:
    time.sleep(0.15)
    rng = np.random.default_rng(i)
    return Frame(image=rng.integers(0, 255, (8, 12, 3), dtype=np.uint8), label=np.full((8, 12), i, np.uint8),
                 x=rng.standard_normal((1, 8, 12)).astype(np.float32), modality="depth", name=f"slow/{i}")


def _build_in_another_process(directory: str, barrier, results) -> None:
    barrier.wait()
    cache = ensure_cache(Path(directory), {"test": "race"}, "", 6, "depth", _slow_frame, progress=False)
    frames = [cache.frame(i) for i in range(len(cache))]
    results.put((cache.built, [(f.image.tobytes(), f.label.tobytes(), f.x.tobytes()) for f in frames]))


def test_two_processes_building_at_once_build_it_once_and_both_use_it(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    directory = tmp_path / "race"
    procs = [ctx.Process(target=_build_in_another_process, args=(str(directory), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(built for built, _ in got) == [False, True]
    expected = [(f.image.tobytes(), f.label.tobytes(), f.x.tobytes()) for f in map(_slow_frame, range(6))]
    assert got[0][1] == got[1][1] == expected
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["race"]  # no temporary folder left
    assert json.loads((directory / INDEX_FILE).read_text())["names"] == [f"slow/{i}" for i in range(6)]


# --------------------------------------------------------------------------- config


def test_the_option_does_not_change_results_or_the_teacher():
    base = from_dict(ExperimentConfig, {})
    assert teacher_hash(from_dict(ExperimentConfig, {"data": {"frame_cache": True}})) == teacher_hash(base)
    assert any("data.frame_cache".startswith(p) for p in NOT_RESULT_AFFECTING)
    from lix_train.config import resolve

    assert resolve(ExperimentConfig, PRESETS_DIR, "synthetic").data.frame_cache
    assert not resolve(ExperimentConfig, PRESETS_DIR, "quick").data.frame_cache
