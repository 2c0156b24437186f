"""nuImages source: the install hint without the devkit, and the loader over a stand-in devkit."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from data_trees import (
    NUIMAGES_TEST_CATEGORIES,
    install_fake_nuimages_devkit,
    nuimages_name_to_index,
    write_image,
    write_nuimages_tree,
)

from lix_train.data.classes import IGNORE_INDEX
from lix_train.data.errors import DatasetError
from lix_train.data.nuimages import (
    NUIMAGES,
    NUIMAGES_CATEGORY_TO_CLASS,
    NuImagesDevkitMissing,
    NuImagesSource,
    mask_index_lut,
)
from lix_train.data.sources import build_source

ID = {name: i for i, name in enumerate(NUIMAGES.names)}
# Mask index -> category name, as the devkit numbers the fixture's categories.
CATEGORY_OF = {i: n for n, i in nuimages_name_to_index([{"name": n} for n in NUIMAGES_TEST_CATEGORIES]).items()}


def test_missing_devkit_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nuimages", None)  # import fails even if it were installed
    with pytest.raises(NuImagesDevkitMissing, match=r'pip install "lix-seg\[nuimages\]"') as info:
        NuImagesSource(tmp_path)
    assert isinstance(info.value, ImportError)
    with pytest.raises(ImportError, match="nuScenes devkit"):
        build_source("nuimages", root=tmp_path)


def test_every_mapped_category_names_a_class():
    assert {c for c in NUIMAGES_CATEGORY_TO_CLASS.values() if c is not None} | {"background"} == set(NUIMAGES.names)


def test_mask_lut_maps_background_classes_and_ignores_the_rest(caplog):
    index = {"vehicle.car": 1, "vehicle.ego": 31, "flat.driveable_surface": 24, "animal": 2, "new.thing": 3}
    with caplog.at_level(logging.WARNING):
        lut = mask_index_lut(index)
    assert "new.thing" in caplog.text
    assert lut[0] == ID["background"] and lut[1] == ID["car"] and lut[24] == ID["driveable_surface"]
    assert lut[31] == lut[2] == lut[3] == lut[200] == IGNORE_INDEX


def test_loads_images_masks_and_intrinsics_through_the_devkit_api(tmp_path, monkeypatch):
    install_fake_nuimages_devkit(monkeypatch)
    truth = write_nuimages_tree(tmp_path)
    source = NuImagesSource(tmp_path, version="v1.0-mini")
    assert source.class_set is NUIMAGES and not source.has_depth
    assert sorted(source.names) == sorted(truth)
    for i, name in enumerate(source.names):
        sample, expected = source[i], truth[name]
        assert np.abs(sample.rgb.astype(int) - expected["rgb"]).mean() < 2.0
        np.testing.assert_allclose(sample.intrinsics, expected["K"])
        assert sample.depth is None
        for index in np.unique(expected["semantic"]):
            ids = np.unique(sample.label[expected["semantic"] == index])
            assert ids.size == 1
            if index == 0:
                assert ids[0] == ID["background"]
            else:
                target = NUIMAGES_CATEGORY_TO_CLASS[CATEGORY_OF[index]]
                assert ids[0] == (IGNORE_INDEX if target is None else ID[target])
    labels = np.concatenate([source[i].label.ravel() for i in range(len(source))])
    assert {ID["car"], ID["driveable_surface"], IGNORE_INDEX} <= set(labels.tolist())


def test_camera_filter_and_unknown_camera(tmp_path, monkeypatch):
    install_fake_nuimages_devkit(monkeypatch)
    write_nuimages_tree(tmp_path)
    source = NuImagesSource(tmp_path, version="v1.0-mini", cameras=["CAM_BACK"])
    assert len(source) == 1 and source.names[0].startswith("CAM_BACK/")
    with pytest.raises(DatasetError, match=r"unknown camera\(s\) CAM_LEFT; available: CAM_BACK, CAM_FRONT"):
        NuImagesSource(tmp_path, version="v1.0-mini", cameras=["CAM_LEFT"])


def test_missing_version_folder_names_what_exists(tmp_path, monkeypatch):
    install_fake_nuimages_devkit(monkeypatch)
    write_nuimages_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"no v1.0-train folder \(found: v1.0-mini\)"):
        NuImagesSource(tmp_path)


def test_depth_dir_matches_png_mm_and_npy_metres_by_stem(tmp_path, monkeypatch):
    install_fake_nuimages_devkit(monkeypatch)
    truth = write_nuimages_tree(tmp_path / "nuim")
    (front,) = [t for n, t in truth.items() if n.startswith("CAM_FRONT")]
    (back,) = [t for n, t in truth.items() if n.startswith("CAM_BACK")]
    mm = np.full((24, 40), 4321, np.uint16)
    write_image(tmp_path / "depth" / "samples" / "CAM_FRONT" / f"{front['stem']}.png", mm)
    metres = np.linspace(1, 80, 24 * 40, dtype=np.float32).reshape(24, 40)
    (tmp_path / "depth" / "flat").mkdir(parents=True)
    np.save(tmp_path / "depth" / "flat" / f"{back['stem']}.npy", metres)
    source = NuImagesSource(tmp_path / "nuim", version="v1.0-mini", depth_dir=tmp_path / "depth")
    assert source.has_depth
    depths = {source.names[i].split("/")[0]: source[i].depth for i in range(len(source))}
    np.testing.assert_allclose(depths["CAM_FRONT"], 4.321, rtol=1e-6)
    np.testing.assert_array_equal(depths["CAM_BACK"], metres)
