"""The embedded default dataset: cache key, one-time generation, atomic publish, scene splits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lix_train.data import embedded
from lix_train.data.embedded import (
    EmbeddedConfig,
    default_cache_dir,
    embedded_splits,
    ensure_embedded_dataset,
)
from lix_train.data.errors import DatasetError
from lix_train.data.synthetic import GENERATOR_VERSION, split_scenes

TINY = EmbeddedConfig(scenes=4, frames=2, height=32, width=96, variations=("clone",), val_scenes=1, test_scenes=1)


@pytest.fixture
def counted(monkeypatch):
    """Count calls of the dataset writer that ensure_embedded_dataset uses."""
    calls = []
    real = embedded.write_dataset

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "write_dataset", spy)
    return calls


def test_generates_once_then_reads_the_cache(tmp_path, counted):
    root = ensure_embedded_dataset(tmp_path, TINY, progress=False, workers=1)
    assert root.parent == tmp_path
    assert root.name == f"embedded-v{GENERATOR_VERSION}-{TINY.digest()}"
    assert (root / "Scene04" / "clone" / "frames" / "rgb" / "Camera_0" / "rgb_00001.jpg").is_file()
    stamp = (root / "embedded.json").stat().st_mtime_ns
    assert ensure_embedded_dataset(tmp_path, TINY, progress=False, workers=1) == root
    assert len(counted) == 1
    assert (root / "embedded.json").stat().st_mtime_ns == stamp
    # nothing temporary is left beside the result
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [root.name]


def test_splits_are_disjoint_by_scene_and_cover_every_scene(tmp_path):
    root = ensure_embedded_dataset(tmp_path, TINY, progress=False, workers=1)
    splits = embedded_splits(root)
    assert set(splits) == {"train", "val", "test"}
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (2, 1, 1)
    scenes = [s for names in splits.values() for s in names]
    assert len(scenes) == len(set(scenes))
    assert sorted(scenes) == sorted(p.name for p in root.iterdir() if p.is_dir())
    manifest = json.loads((root / "embedded.json").read_text())
    assert manifest["splits"] == splits
    assert manifest["config"]["scenes"] == 4


def test_split_scenes_is_a_deterministic_partition():
    names = [f"Scene{i:02d}" for i in range(1, 21)]
    a = split_scenes(names, 3, 3, seed=0)
    assert a == split_scenes(names, 3, 3, seed=0)
    assert sorted(a["train"] + a["val"] + a["test"]) == names
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 3, 3)
    assert a != split_scenes(names, 3, 3, seed=1)
    with pytest.raises(ValueError, match="keep one for train"):
        split_scenes(names[:2], 1, 1, seed=0)


def test_concurrent_callers_generate_once(tmp_path, counted):
    results, errors = [], []

    def call():
        try:
            results.append(ensure_embedded_dataset(tmp_path, TINY, progress=False, workers=1))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 3
    assert len(counted) == 1


def test_failed_generation_leaves_no_partial_dataset(tmp_path, monkeypatch):
    def broken(root, *args, **kwargs):
        (Path(root) / "Scene01").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "write_dataset", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_embedded_dataset(tmp_path, TINY, progress=False, workers=1)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_key_changes_with_the_config():
    assert TINY.dirname() != EmbeddedConfig(**{**TINY.__dict__, "seed": 1}).dirname()
    assert TINY.dirname() != EmbeddedConfig(**{**TINY.__dict__, "ambiguity": 0.5}).dirname()
    assert TINY.dirname() == EmbeddedConfig(**TINY.__dict__).dirname()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIX_SEG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LIX_SEG_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "lix-seg"


def test_default_config_is_the_documented_set():
    config = EmbeddedConfig()
    assert (config.height, config.width) == (192, 640)
    assert config.scenes - config.val_scenes - config.test_scenes >= 10
    assert config.frames * len(config.variations) * (config.scenes - config.val_scenes - config.test_scenes) >= 800


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"val_scenes": 2, "test_scenes": 2}, "scenes"),
        ({"val_scenes": 0}, "val_scenes"),
        ({"height": 4}, "height"),
        ({"ambiguity": -0.1}, "ambiguity"),
        ({"variations": ("dusk",)}, "variations"),
    ],
)
def test_config_validation_names_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message):
        EmbeddedConfig(**{**TINY.__dict__, **overrides})


def test_missing_or_bad_splits_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="splits.json"):
        embedded_splits(tmp_path)
    (tmp_path / "splits.json").write_text('{"train": ["Scene01"]}')
    with pytest.raises(DatasetError, match="train"):
        embedded_splits(tmp_path)
