"""A dataset is one file and one registration line: a toy dataset, declared here as its file would declare it
and registered with the table's one call, reaches DataConfig, build_datasets, and lix_deploy's calib and export,
which all read its class set from the same DatasetSpec."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from data_trees import write_image

from lix_train.config import ConfigError, from_dict
from lix_train.data import registry
from lix_train.data.build import build_datasets, missing_x_message, resolve_root, source_identity
from lix_train.data.classes import ClassSet
from lix_train.data.config import DataConfig
from lix_train.data.io import read_rgb
from lix_train.data.registry import DATASETS, DatasetOptions, DatasetSpec, register_dataset
from lix_train.data.sample import Sample
from lix_train.data.sources import SOURCES, FrameSubset, build_source

# ----------------------------------------------------------------- what lix_train/data/toy.py would hold

TOY = ClassSet("toy", ("ground", "thing"), ((128, 64, 128), (220, 20, 60)))
FRAMES = 8


class ToySource:
    """ROOT/<name>.png frames; a pixel is a `thing` where its red channel is above 127, else `ground`."""

    class_set = TOY
    has_depth = False

    def __init__(self, root: str | Path, on_error: str = "raise"):
        self.root = Path(root)
        self.names = sorted(p.stem for p in self.root.glob("*.png"))

    def __len__(self) -> int:
        return len(self.names)

    def frame_files(self, index: int) -> list[Path]:
        return [self.root / f"{self.names[index]}.png"]

    def __getitem__(self, index: int) -> Sample:
        rgb = read_rgb(self.frame_files(index)[0])
        return Sample(rgb, (rgb[..., 0] > 127).astype(np.uint8), name=self.names[index])


def toy_sources(cfg: DataConfig, root: Path, splits) -> dict:
    """The first half of the frames (by name) train, then a quarter each val and test."""
    source = build_source("toy", root=root, on_error=cfg.on_error)
    n = len(source)
    parts = {"train": range(n // 2), "val": range(n // 2, 3 * n // 4), "test": range(3 * n // 4, n)}
    return {split: FrameSubset(source, parts[split]) for split in splits}


SPEC = DatasetSpec("toy", TOY, toy_sources, root_hint="a folder of toy PNGs", x_hint="toys have no depth",
                   reader=ToySource)

# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def toy(monkeypatch):
    """The toy dataset registered (the table's one line) in a copy of the registry, dropped after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", registry.registered_datasets())
    register_dataset(SPEC)
    return SPEC


@pytest.fixture
def toy_root(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        write_image(tmp_path / "toy" / f"frame{i}.png", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    return tmp_path / "toy"


def test_the_table_registers_the_datasets_in_order():
    assert list(DATASETS) == ["synthetic", "vkitti2", "kitti_semantics", "nuimages"]
    assert list(registry.CLASS_SETS) == ["vkitti2", "cityscapes", "nuimages"]
    assert [f.name for f in dataclasses.fields(DataConfig)][-4:] == ["transforms", "vkitti2", "kitti", "nuimages"]


def test_data_config_accepts_the_registered_dataset(toy, toy_root):
    assert "toy" in DATASETS and list(DATASETS)[-1] == "toy" and set(SOURCES) >= {"toy"}
    cfg = from_dict(DataConfig, {"dataset": "toy", "root": str(toy_root)})
    assert cfg.class_set is TOY and cfg.spec is SPEC and cfg.options is None
    assert source_identity(cfg) == {"dataset": "toy", "root": str(toy_root.resolve()), "source": {}}
    assert "toys have no depth" in missing_x_message(cfg)
    with pytest.raises(ConfigError, match="data.train_scenes applies to vKITTI2-format data, not data.dataset='toy'$"):
        DataConfig(dataset="toy", train_scenes=("Scene01",))
    with pytest.raises(ConfigError, match="data.root is required for data.dataset='toy': set --data.root to a folder"):
        resolve_root(DataConfig(dataset="toy"))


def test_build_datasets_builds_it(toy, toy_root):
    data = build_datasets(DataConfig(dataset="toy", root=toy_root), None)
    assert {split: len(d) for split, d in data.items()} == {"train": 4, "val": 2, "test": 2}
    item = data["val"][0]
    assert item["label"].max() <= 1 and data["test"].class_set is TOY
    with pytest.raises(ConfigError, match="toys have no depth"):
        build_datasets(DataConfig(dataset="toy", root=toy_root), "normals")


def test_calib_reads_it_from_the_spec(toy, toy_root, tmp_path, capsys):
    from lix_deploy.calib import MANIFEST, main

    out = tmp_path / "calib"
    assert main(["--dataset", "toy", "--root", str(toy_root), "--split", "val", "--num", "2", "--height", "32",
                 "--width", "32", "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["dataset"] == "toy" and manifest["class_set"] == "toy"
    assert {f["hashed"] for f in manifest["files"]} == {"rgb_pixels"}  # not vKITTI2-format: no RGB file path
    assert "2 frames of toy/val" in capsys.readouterr().out


def test_export_reads_its_class_set_from_the_spec(toy, toy_root, tmp_path):
    from lix_deploy.export import CLASS_SETS_BY_NAME, build_parser, class_set_named, class_set_of_dataset, load_student
    from lix_train.config import to_dict
    from lix_train.engine.checkpoint import atomic_torch_save, build_checkpoint
    from lix_train.experiment import ExperimentConfig, build_network, network_signature

    assert class_set_of_dataset("toy") is TOY and class_set_named("toy") is TOY and "toy" in CLASS_SETS_BY_NAME
    assert build_parser().parse_args(["--checkpoint", "x.pt", "--out", "x.onnx", "--classes", "toy"]).classes == "toy"
    model = {"encoder": "resnet18", "width": 0.25, "decoder_channels": 16, "num_classes": 2}
    cfg = from_dict(ExperimentConfig, {"data": {"dataset": "toy", "root": str(toy_root)},
                                       "student": {"model": model}, "teacher": {"model": model}})
    student = build_network("student", cfg.student.model)
    path = atomic_torch_save(build_checkpoint(model=student, signature=network_signature("student", cfg.student.model),
                                              iteration=0, config=to_dict(cfg), metrics={}), tmp_path / "student.pt")
    loaded = load_student(path)
    assert loaded.class_set is TOY and loaded.dataset == "toy"


def test_unknown_names_and_late_option_sections_are_refused(toy):
    with pytest.raises(ConfigError, match="data.dataset='toys' is not one of 'synthetic', .*'toy'"):
        registry.dataset_spec("toys")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(dataclasses.replace(SPEC, x_hint="another toy"))

    @dataclasses.dataclass
    class LateOptions:
        size: int = 1

    late = DatasetSpec("late", TOY, toy_sources, root_hint="anything", options=DatasetOptions("late", LateOptions))
    with pytest.raises(ValueError, match="data.late must be registered in lix_train.data.datasets"):
        register_dataset(late)
    other_toy = ClassSet("toy", ("a",), ((0, 0, 0),))
    with pytest.raises(ValueError, match="class set 'toy' differs"):
        register_dataset(DatasetSpec("toy2", other_toy, toy_sources, root_hint="anything"))
