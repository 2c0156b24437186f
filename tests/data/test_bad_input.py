"""Bad dataset input: one clear DatasetError naming the file, or a counted, logged skip."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from data_trees import (
    install_fake_nuimages_devkit,
    vkitti2_path,
    write_image,
    write_kitti_calib,
    write_kitti_semantics_tree,
    write_nuimages_tree,
    write_vkitti2_tree,
)

from lix_train.data.errors import DatasetError
from lix_train.data.kitti_semantics import KITTISemanticsSource
from lix_train.data.nuimages import NuImagesSource
from lix_train.data.sources import SkippingSource, build_source
from lix_train.data.vkitti2 import VKITTI2Source

LAYOUT = r"expected Scene\*/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg under ROOT"


@pytest.fixture
def tree(tmp_path):
    write_vkitti2_tree(tmp_path, frames=3, cameras=("Camera_0",))
    return tmp_path


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------ missing files


def test_missing_rgb_names_the_missing_file(tree):
    missing = vkitti2_path(tree, "rgb", frame=1)
    missing.unlink()
    with pytest.raises(DatasetError, match="file not found; expected it next to .*depth_00001.png") as info:
        VKITTI2Source(tree)
    assert info.value.path == missing


def test_missing_label_is_skipped_counted_and_logged_once(tree, caplog):
    vkitti2_path(tree, "label", frame=2).unlink()
    with caplog.at_level(logging.WARNING):
        source = VKITTI2Source(tree, on_error="skip")
    assert len(source) == 2 and source.skipped == 1
    assert source.names == ["Scene01/clone/Camera_0/00000", "Scene01/clone/Camera_0/00001"]
    (message,) = _warnings(caplog)
    assert "classgt_00002.png" in message


def test_missing_depth_folder_suggests_depth_root(tree):
    for f in vkitti2_path(tree, "depth").parent.iterdir():
        f.unlink()
    vkitti2_path(tree, "depth").parent.rmdir()
    with pytest.raises(DatasetError, match="pass depth_root= if that tarball was extracted elsewhere"):
        VKITTI2Source(tree)


def test_missing_colors_txt(tree):
    (tree / "Scene01" / "clone" / "colors.txt").unlink()
    with pytest.raises(DatasetError, match="colors.txt: file not found; expected Scene.*pass text_root="):
        VKITTI2Source(tree)


def test_missing_intrinsics_row(tree):
    path = tree / "Scene01" / "clone" / "intrinsic.txt"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("2 0")))
    with pytest.raises(DatasetError, match="no row for frame 2 camera 0"):
        VKITTI2Source(tree)
    assert len(VKITTI2Source(tree, on_error="skip")) == 2


# ------------------------------------------------------------------ corrupt or wrong files


@pytest.mark.parametrize("modality", ["rgb", "label", "depth"])
def test_corrupt_file_raises_naming_it(tree, modality):
    path = vkitti2_path(tree, modality, frame=1)
    path.write_bytes(b"this is not an image" * 20)
    source = VKITTI2Source(tree)
    source[0]
    with pytest.raises(DatasetError, match="cannot decode image") as info:
        source[1]
    assert info.value.path == path


def test_corrupt_file_is_skipped_by_build_source_with_skip(tree, caplog):
    vkitti2_path(tree, "rgb", frame=1).write_bytes(b"\xff\xd8garbage")
    source = build_source("vkitti2", root=tree, on_error="skip")
    assert isinstance(source, SkippingSource) and source.has_depth and len(source) == 3
    with caplog.at_level(logging.WARNING):
        assert source[1].name == "Scene01/clone/Camera_0/00002"  # substituted by the next good one
        assert source[1].name == "Scene01/clone/Camera_0/00002"  # known bad: not re-read, not re-logged
        assert source[0].name == "Scene01/clone/Camera_0/00000"
    assert source.skipped == 1
    (message,) = _warnings(caplog)
    assert "rgb_00001.jpg" in message and "cannot decode" in message


def test_all_samples_bad_is_one_error(tree):
    for frame in range(3):
        vkitti2_path(tree, "depth", frame=frame).write_bytes(b"junk")
    source = SkippingSource(VKITTI2Source(tree))
    with pytest.raises(DatasetError, match="3 consecutive samples from index 0 failed to load"):
        source[0]
    assert source.skipped == 3


def test_label_colour_absent_from_colors_txt(tree):
    path = vkitti2_path(tree, "label", frame=0)
    label = np.full((24, 40, 3), (90, 200, 255), np.uint8)  # Sky
    label[:2, :5] = (1, 2, 3)
    write_image(path, label)
    with pytest.raises(DatasetError) as info:
        VKITTI2Source(tree)[0]
    message = str(info.value)
    assert str(path) in message and "(1, 2, 3) x 10 px" in message and "10 pixels" in message
    assert "colors.txt" in message


def test_depth_of_wrong_dtype(tree):
    write_image(vkitti2_path(tree, "depth", frame=0), np.zeros((24, 40), np.uint8))
    with pytest.raises(DatasetError, match=r"depth_00000.png: image is uint8 \(8-bit\); expected a uint16 depth PNG"):
        VKITTI2Source(tree)[0]


def test_depth_of_wrong_size(tree):
    write_image(vkitti2_path(tree, "depth", frame=0), np.ones((20, 40), np.uint16))
    with pytest.raises(DatasetError, match=r"depth_00000.png: image is 40x20 \(WxH\) but the RGB image is 40x24"):
        VKITTI2Source(tree)[0]


def test_rgb_label_size_mismatch(tree):
    write_image(vkitti2_path(tree, "rgb", frame=0), np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"classgt_00000.png: image is 40x24 \(WxH\) but the RGB image is 40x30"):
        VKITTI2Source(tree)[0]


# ------------------------------------------------------------------ layout and names


def test_empty_root_says_what_layout_was_expected(tmp_path):
    with pytest.raises(DatasetError, match=f"no Scene\\* directories found; {LAYOUT}"):
        VKITTI2Source(tmp_path)
    with pytest.raises(DatasetError, match="directory not found"):
        VKITTI2Source(tmp_path / "nope")


def test_root_pointing_at_a_variation_folder_gets_a_hint(tree):
    with pytest.raises(DatasetError, match="looks like a scene or variation folder"):
        VKITTI2Source(tree / "Scene01" / "clone")


def test_wrongly_laid_out_frames(tmp_path):
    write_vkitti2_tree(tmp_path, frames=1)
    frames = tmp_path / "Scene01" / "clone" / "frames"
    frames.rename(tmp_path / "Scene01" / "clone" / "images")
    with pytest.raises(DatasetError, match=r"no camera 'Camera_0'; available: none \(expected layout Scene"):
        VKITTI2Source(tmp_path)


def test_unknown_scene_variation_camera_list_the_available_ones(tmp_path):
    write_vkitti2_tree(tmp_path, scenes=("Scene01", "Scene02"), variations=("clone", "fog"), cameras=("Camera_0",),
                       frames=1)
    with pytest.raises(DatasetError, match=r"unknown scene\(s\) Scene06; available: Scene01, Scene02"):
        VKITTI2Source(tmp_path, scenes=["Scene06"])
    with pytest.raises(DatasetError, match=r"unknown variation\(s\) rain; available: clone, fog"):
        VKITTI2Source(tmp_path, variations=["clone", "rain"])
    with pytest.raises(DatasetError, match=r"no camera 'Camera_1'; available: Camera_0"):
        VKITTI2Source(tmp_path, cameras=["Camera_1"])


# ------------------------------------------------------------------ the other sources


def test_kitti_empty_root_and_missing_semantic_partner(tmp_path, caplog):
    with pytest.raises(DatasetError, match="expected training/image_2/\\*.png and training/semantic/\\*.png"):
        KITTISemanticsSource(tmp_path)
    write_kitti_semantics_tree(tmp_path)
    (tmp_path / "training" / "semantic" / "000001_10.png").unlink()
    with pytest.raises(DatasetError, match="semantic/000001_10.png: file not found; expected it next to"):
        KITTISemanticsSource(tmp_path)
    with caplog.at_level(logging.WARNING):
        source = KITTISemanticsSource(tmp_path, on_error="skip")
    assert source.names == ["000000_10"] and source.skipped == 1 and len(_warnings(caplog)) == 1


def test_kitti_missing_right_image_and_wrong_depth_dtype(tmp_path):
    write_kitti_semantics_tree(tmp_path / "sem")
    (tmp_path / "stereo" / "training" / "image_3").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no training/calib_cam_to_cam or training/calib folder"):
        KITTISemanticsSource(tmp_path / "sem", stereo_root=tmp_path / "stereo")
    for frame in ("000000", "000001"):
        write_kitti_calib(tmp_path / "stereo" / "training" / "calib_cam_to_cam" / f"{frame}.txt")
    with pytest.raises(DatasetError, match="image_3/000000_10.png: file not found; expected the right view"):
        KITTISemanticsSource(tmp_path / "sem", stereo_root=tmp_path / "stereo")
    for stem in ("000000_10", "000001_10"):
        write_image(tmp_path / "depth" / f"{stem}.png", np.zeros((24, 40), np.uint8))
    with pytest.raises(DatasetError, match=r"image is uint8 \(8-bit\); expected a uint16 depth PNG \(png_mm\)"):
        KITTISemanticsSource(tmp_path / "sem", depth_dir=tmp_path / "depth")[0]


def test_kitti_corrupt_label(tmp_path):
    write_kitti_semantics_tree(tmp_path)
    (tmp_path / "training" / "semantic" / "000000_10.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="000000_10.png: cannot decode image"):
        KITTISemanticsSource(tmp_path)[0]


def test_nuimages_missing_depth_file(tmp_path, monkeypatch, caplog):
    install_fake_nuimages_devkit(monkeypatch)
    write_nuimages_tree(tmp_path / "nuim")
    (tmp_path / "depth").mkdir()
    with pytest.raises(DatasetError, match="no <stem>.png or .npy depth for"):
        NuImagesSource(tmp_path / "nuim", version="v1.0-mini", depth_dir=tmp_path / "depth")
    with caplog.at_level(logging.WARNING):
        source = NuImagesSource(tmp_path / "nuim", version="v1.0-mini", depth_dir=tmp_path / "depth", on_error="skip")
    assert len(source) == 0 and source.skipped == 2 and len(_warnings(caplog)) == 2
