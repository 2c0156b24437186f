"""vKITTI2 source on fixture trees written in the official release layout."""

from __future__ import annotations

import numpy as np
import pytest
from data_trees import write_vkitti2_tree

from lix_train.data.classes import IGNORE_INDEX, VKITTI2
from lix_train.data.sources import SOURCES, build_source
from lix_train.data.vkitti2 import VKITTI2Source


def _assert_matches(sample, truth):
    np.testing.assert_array_equal(sample.label, truth["label"])
    np.testing.assert_array_equal(sample.depth, truth["depth"])
    np.testing.assert_array_equal(sample.intrinsics, truth["K"])
    assert np.abs(sample.rgb.astype(int) - truth["rgb"]).mean() < 2.0  # JPEG, quality 95


def test_official_layout_loads_exact_labels_depth_and_intrinsics(tmp_path):
    truth = write_vkitti2_tree(tmp_path, frames=2)
    assert (tmp_path / "Scene01" / "clone" / "extrinsic.txt").is_file()  # present, ignored
    source = VKITTI2Source(tmp_path, cameras=("Camera_0", "Camera_1"))
    assert source.class_set is VKITTI2 and source.has_depth
    assert source.names == [
        "Scene01/clone/Camera_0/00000", "Scene01/clone/Camera_0/00001",
        "Scene01/clone/Camera_1/00000", "Scene01/clone/Camera_1/00001",
    ]
    for i, name in enumerate(source.names):
        sample = source[i]
        assert sample.name == name
        assert sample.rgb.shape == (24, 40, 3) and sample.depth.dtype == np.float32
        _assert_matches(sample, truth[name])
    sample = source[0]
    assert (sample.label == IGNORE_INDEX).any() and (sample.label < VKITTI2.num_classes).any()
    assert sample.depth[0, 0] == 0.0 and sample.depth[-1, -1] == pytest.approx(655.35)
    assert sample.meta == {"scene": "Scene01", "variation": "clone", "camera": "Camera_0", "frame": 0}


def test_colours_are_mapped_by_category_name_not_file_order(tmp_path):
    truth = write_vkitti2_tree(tmp_path, frames=1, shuffle_colors=True, seed=3)
    first_line = (tmp_path / "Scene01" / "clone" / "colors.txt").read_text().splitlines()[1]
    assert not first_line.startswith("Terrain")  # the shuffle really moved things
    source = VKITTI2Source(tmp_path)
    np.testing.assert_array_equal(source[0].label, truth["Scene01/clone/Camera_0/00000"]["label"])


def test_default_camera_and_selection_of_scenes_and_variations(tmp_path):
    write_vkitti2_tree(tmp_path, scenes=("Scene01", "Scene02"), variations=("clone", "fog"), frames=1)
    assert len(VKITTI2Source(tmp_path)) == 4  # Camera_0 only, all scenes and variations
    source = VKITTI2Source(tmp_path, scenes=["Scene02"], variations=["fog"], cameras=["Camera_1"])
    assert source.names == ["Scene02/fog/Camera_1/00000"]


def test_tarballs_in_separate_roots(tmp_path):
    roots = {k: tmp_path / k for k in ("rgb", "depth", "seg", "text")}
    truth = write_vkitti2_tree(tmp_path / "unused", frames=1, roots=roots)
    source = VKITTI2Source(
        roots["rgb"], depth_root=roots["depth"], seg_root=roots["seg"], text_root=roots["text"]
    )
    _assert_matches(source[0], truth["Scene01/clone/Camera_0/00000"])


def test_unrelated_files_in_frame_folders_are_ignored(tmp_path):
    write_vkitti2_tree(tmp_path, frames=1)
    (tmp_path / "Scene01" / "clone" / "frames" / "rgb" / "Camera_0" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "Scene01" / "clone" / "pose.txt").write_text("frame cameraID\n")
    assert len(VKITTI2Source(tmp_path)) == 1


def test_registry_builds_vkitti2_and_rejects_unknown_names(tmp_path):
    write_vkitti2_tree(tmp_path, frames=1)
    assert set(SOURCES) == {"vkitti2", "kitti_semantics", "nuimages"}
    source = build_source("vkitti2", root=tmp_path)
    assert isinstance(source, VKITTI2Source) and len(source) == 1
    valid = "valid names: kitti_semantics, nuimages, vkitti2"
    with pytest.raises(ValueError, match=f"unknown dataset source 'vkitti'; {valid}"):
        build_source("vkitti", root=tmp_path)


def test_option_validation(tmp_path):
    write_vkitti2_tree(tmp_path, frames=1)
    with pytest.raises(ValueError, match="on_error"):
        VKITTI2Source(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['Camera_2'\]"):
        VKITTI2Source(tmp_path, cameras=["Camera_2"])
