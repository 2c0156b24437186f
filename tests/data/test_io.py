"""Checked readers: good files decode to the project's conventions, bad ones name the problem."""

from __future__ import annotations

import numpy as np
import pytest
from data_trees import write_image

from lix_train.data.classes import IGNORE_INDEX, VKITTI2_CATEGORIES, cityscapes_id_lut
from lix_train.data.errors import DatasetError
from lix_train.data.io import (
    DEPTH_MAP,
    DISPARITY_MAP,
    index_by_stem,
    read_color_label,
    read_colors_txt,
    read_depth_cm_png,
    read_float_map,
    read_id_label,
    read_rgb,
    read_vkitti2_intrinsics,
    write_png_atomic,
)


def test_read_rgb_returns_rgb_order_exactly_for_png(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: a BGR/RGB swap would show up in channel 2
    out = read_rgb(write_image(tmp_path / "a.png", rgb))
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("content, problem", [(None, "file not found"), (b"", "file is empty"),
                                               (b"\x00garbage" * 10, "cannot decode image")])
def test_read_rgb_missing_empty_corrupt(tmp_path, content, problem):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=problem) as info:
        read_rgb(path)
    assert info.value.path == path


def test_read_rgb_rejects_greyscale_and_16_bit(tmp_path):
    with pytest.raises(DatasetError, match="1 channel"):
        read_rgb(write_image(tmp_path / "g.png", np.zeros((4, 4), np.uint8)))
    with pytest.raises(DatasetError, match="uint16"):
        read_rgb(write_image(tmp_path / "d.png", np.zeros((4, 4, 3), np.uint16)))


def test_depth_cm_to_metres_keeps_unknown_and_sky(tmp_path):
    cm = np.array([[0, 1, 250], [1000, 12345, 65535]], np.uint16)
    depth = read_depth_cm_png(write_image(tmp_path / "d.png", cm))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, cm / 100.0, rtol=1e-6)
    assert depth[0, 0] == 0.0 and depth[1, 2] == pytest.approx(655.35)


def test_depth_cm_rejects_8_bit_wrong_channels_and_size(tmp_path):
    with pytest.raises(DatasetError, match=r"uint8 \(8-bit\); expected a uint16 depth PNG in centimetres"):
        read_depth_cm_png(write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8)))
    with pytest.raises(DatasetError, match="3 channels"):
        read_depth_cm_png(write_image(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint16)))
    with pytest.raises(DatasetError, match=r"image is 4x3 \(WxH\) but the RGB image is 5x3"):
        read_depth_cm_png(write_image(tmp_path / "c.png", np.zeros((3, 4), np.uint16)), expected_shape=(3, 5))


def test_color_label_maps_colours_and_reports_unknown_ones(tmp_path):
    table = {(10, 20, 30): 0, (0, 0, 0): IGNORE_INDEX, (255, 0, 0): 3}
    img = np.zeros((3, 4, 3), np.uint8)
    img[0] = (10, 20, 30)
    img[1, :2] = (255, 0, 0)
    expected = np.full((3, 4), IGNORE_INDEX, np.uint8)
    expected[0] = 0
    expected[1, :2] = 3
    np.testing.assert_array_equal(read_color_label(write_image(tmp_path / "l.png", img), table), expected)

    img[2, 1:] = (1, 2, 3)
    path = write_image(tmp_path / "bad.png", img)
    expected_message = r"3 pixels have 1 colour\(s\) not in colors.txt: \(1, 2, 3\) x 3 px"
    with pytest.raises(DatasetError, match=expected_message) as info:
        read_color_label(path, table, table_name="colors.txt")
    assert info.value.path == path


def test_color_label_rejects_single_channel(tmp_path):
    with pytest.raises(DatasetError, match="3-channel colour-coded label"):
        read_color_label(write_image(tmp_path / "l.png", np.zeros((3, 3), np.uint8)), {(0, 0, 0): 0})


def test_id_label_applies_lut_and_rejects_colour_masks(tmp_path):
    ids = np.array([[7, 8, 0], [26, 33, 255]], np.uint8)
    out = read_id_label(write_image(tmp_path / "s.png", ids), cityscapes_id_lut())
    np.testing.assert_array_equal(out, [[0, 1, 255], [13, 18, 255]])
    with pytest.raises(DatasetError, match="colour-coded mask"):
        read_id_label(write_image(tmp_path / "c.png", np.zeros((2, 3, 3), np.uint8)), cityscapes_id_lut())


def test_colors_txt_parses_release_format_and_flags_bad_lines(tmp_path):
    path = tmp_path / "colors.txt"
    path.write_text("Category r g b\n" + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in VKITTI2_CATEGORIES))
    assert read_colors_txt(path) == list(VKITTI2_CATEGORIES)
    path.write_text("Category r g b\nTerrain 210 0\n")
    with pytest.raises(DatasetError, match="line 2 'Terrain 210 0' is malformed"):
        read_colors_txt(path)
    path.write_text("Category r g b\nTerrain 1 2 3\nSky 1 2 3\n")
    with pytest.raises(DatasetError, match=r"duplicate colour\(s\) \(1, 2, 3\)"):
        read_colors_txt(path)


def test_vkitti2_intrinsics_per_frame_and_camera(tmp_path):
    path = tmp_path / "intrinsic.txt"
    path.write_text("frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n0 0 725.0087 725.0087 620.5 187.0\n"
                    "0 1 725.0087 725.0087 620.5 187.0\n1 0 700 710 600 180\n")
    k = read_vkitti2_intrinsics(path)
    assert set(k) == {(0, 0), (0, 1), (1, 0)}
    np.testing.assert_array_equal(k[(1, 0)], [[700, 0, 600], [0, 710, 180], [0, 0, 1]])
    path.write_text("frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n0 zero 1 1 1 1\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_vkitti2_intrinsics(path)


def test_user_depth_and_disparity_formats(tmp_path):
    raw = np.array([[0, 1000], [2560, 65535]], np.uint16)
    write_image(tmp_path / "d.png", raw)
    np.testing.assert_allclose(read_float_map(tmp_path / "d.png", "png_mm", DEPTH_MAP), raw / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(read_float_map(tmp_path / "d.png", "png_256", DEPTH_MAP), raw / 256.0, rtol=1e-6)
    np.testing.assert_allclose(read_float_map(tmp_path / "d.png", "png_256", DISPARITY_MAP), raw / 256.0, rtol=1e-6)
    np.save(tmp_path / "d.npy", np.array([[np.nan, -1.0], [2.5, np.inf]], np.float64))
    np.testing.assert_array_equal(read_float_map(tmp_path / "d.npy", "npy", DEPTH_MAP), [[0, 0], [2.5, 0]])
    np.save(tmp_path / "i.npy", np.ones((2, 2), np.int32))
    with pytest.raises(DatasetError, match="expected float depth in metres"):
        read_float_map(tmp_path / "i.npy", "npy", DEPTH_MAP)
    with pytest.raises(ValueError, match="depth_format"):
        read_float_map(tmp_path / "d.png", "exr", DEPTH_MAP)


def test_write_png_atomic_roundtrips_and_leaves_no_temp_files(tmp_path):
    disp = (np.arange(12, dtype=np.uint16) * 300).reshape(3, 4)
    path = tmp_path / "cache" / "000000_10.png"
    write_png_atomic(path, disp)
    np.testing.assert_array_equal(read_float_map(path, "png_256", DISPARITY_MAP), disp / 256.0)
    assert [p.name for p in path.parent.iterdir()] == ["000000_10.png"]


def test_index_by_stem_walks_once_and_rejects_duplicate_stems(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    (tmp_path / "y.npy").write_bytes(b"1")
    (tmp_path / "z.txt").write_bytes(b"1")
    assert set(index_by_stem(tmp_path, (".png", ".npy"), "depth")) == {"x", "y"}
    (tmp_path / "x.npy").write_bytes(b"1")
    with pytest.raises(DatasetError, match="same file stem"):
        index_by_stem(tmp_path, (".png", ".npy"), "depth")
