"""Datasets by name: each dataset's file declares one DatasetSpec, and one line registers it.

    # lix_train/data/toy.py
    SPEC = DatasetSpec("toy", TOY_CLASSES, toy_sources, root_hint="the folder holding toy/*.png")

    # lix_train/data/datasets.py, the table
    register_dataset(toy.SPEC)

Everything dataset-specific reads the spec: `data.dataset`'s choices and validation, the class
set, the split into train / val / test (`sources`), what `data.root` must name, how to give a
teacher X, the dataset's own option section of DataConfig, and the deployment tools (calib's
`--dataset`, export's class sets). A leaf module (of the package it imports only lix_train.config
and the class-set type), so the config, the dataset files and lix_deploy all use it without an import
cycle. The names are the registration order of `lix_train/data/datasets.py`; DATASETS is a live
view of them that imports that table on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lix_train.config import LiveNames, OptionSection, check_choice
from lix_train.data.classes import ClassSet

TABLE = "lix_train.data.datasets"
SPLITS = ("train", "val", "test")

# A split function: (DataConfig, root, splits) -> {split: source}. A source has __len__, __getitem__(i) -> Sample,
# class_set, has_depth and names (and frame_files(i) for the header check and the frame cache).
Splitter = Callable[[Any, Path, Sequence[str]], dict]


DatasetOptions = OptionSection  # a dataset's own section of DataConfig: data.<section> (lix_train.config)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project needs to know about one `data.dataset`.

    name:          the data.dataset value.
    class_set:     its classes, known without reading a file (models, export, calib read them here).
    sources:       (DataConfig, root, splits) -> {split: source} for `splits`, some of SPLITS: reads the
                   data and splits it; a drive or scene must never be in two splits.
    root_hint:     what --data.root must name, for the error when it is not given.
    x_hint:        how to give a teacher X when the source, as configured, has no depth.
    options:       its section of DataConfig (data.<section>), shared by datasets that name the same one;
                   part of the frame cache's key.
    reader:        the source class `sources.build_source(name)` constructs (SOURCES); None when the
                   dataset is read by another's (synthetic is read by the vkitti2 reader).
    vkitti2_format: SceneNN/<variation>/... data: data.*_scenes and data.variations apply, and a
                   calibration set records its RGB files.
    default_root:  (DataConfig, progress) -> root when data.root is empty (synthetic: the embedded set,
                   generated on first use); None = data.root is required.
    default_root_identity: (DataConfig) -> the stable name of that default root in cache keys and
                   teacher hashes (instead of its path).
    """

    name: str
    class_set: ClassSet
    sources: Splitter
    root_hint: str = ""
    x_hint: str = "use a source with depth"
    options: DatasetOptions | None = None
    reader: type | None = None
    vkitti2_format: bool = False
    default_root: Callable[[Any, bool], Path] | None = None
    default_root_identity: Callable[[Any], str] | None = None

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"dataset name {self.name!r} must be a plain identifier (letters, digits, _)")
        if (self.default_root is None) != (self.default_root_identity is None):
            raise ValueError(f"dataset {self.name!r}: give default_root and default_root_identity together")
        if self.default_root is None and not self.root_hint:
            raise ValueError(f"dataset {self.name!r}: without a default_root, root_hint must say what data.root "
                             "names")


_REGISTRY: dict[str, DatasetSpec] = {}
_sections_read = False  # DataConfig has read the option sections: a new one can no longer become a field


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make `spec` the dataset `spec.name` (after those registered before it); returns it."""
    importlib.import_module(TABLE)  # the table's datasets first (a no-op while the table itself registers)
    known = _REGISTRY.values()
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    for other in known:
        if other.class_set.name == spec.class_set.name and other.class_set != spec.class_set:
            raise ValueError(f"dataset {spec.name!r}: class set {spec.class_set.name!r} differs from the one "
                             f"of dataset {other.name!r} of that name")
        if spec.options and other.options and other.options.section == spec.options.section \
                and other.options.cls is not spec.options.cls:
            raise ValueError(f"dataset {spec.name!r}: option section data.{spec.options.section} is already "
                             f"{other.options.cls.__name__} (dataset {other.name!r})")
    if spec.options and _sections_read and spec.options.section not in {s.section for s in _sections()}:
        raise ValueError(f"dataset {spec.name!r}: its option section data.{spec.options.section} must be "
                         f"registered in {TABLE} (before DataConfig is defined)")
    _REGISTRY[spec.name] = spec
    return spec


def registered_datasets() -> dict[str, DatasetSpec]:
    """{name: DatasetSpec} of every dataset, in registration order (importing the table first)."""
    importlib.import_module(TABLE)
    return dict(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset `name`; ConfigError naming the registered ones for any other name."""
    specs = registered_datasets()
    check_choice("data.dataset", name, tuple(specs))
    return specs[name]


def _sections() -> list[DatasetOptions]:
    sections: dict[str, DatasetOptions] = {}
    for spec in _REGISTRY.values():
        if spec.options is not None:
            sections.setdefault(spec.options.section, spec.options)
    return list(sections.values())


def option_sections() -> list[DatasetOptions]:
    """The datasets' option sections, each once, in registration order: DataConfig's fields after its own."""
    global _sections_read
    registered_datasets()
    _sections_read = True
    return _sections()


def class_sets() -> dict[str, ClassSet]:
    """{class-set name: ClassSet} of the registered datasets, each once, in registration order."""
    out: dict[str, ClassSet] = {}
    for spec in registered_datasets().values():
        out.setdefault(spec.class_set.name, spec.class_set)
    return out


DATASETS: Sequence[str] = LiveNames(registered_datasets)  # data.dataset's choices
CLASS_SETS: Sequence[str] = LiveNames(class_sets)  # class-set names (export's --classes)
