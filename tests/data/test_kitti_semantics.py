"""KITTI Semantics source, stereo calibration and SGBM disparity on synthetic fixture trees."""

from __future__ import annotations

import numpy as np
import pytest
from data_trees import (
    KITTI_BASELINE,
    KITTI_FOCAL,
    shifted_stereo_pair,
    textured_rgb,
    write_image,
    write_kitti_calib,
    write_kitti_semantics_tree,
    write_kitti_stereo_tree,
)

from lix_train.data.classes import CITYSCAPES
from lix_train.data.errors import DatasetError
from lix_train.data.io import DISPARITY_MAP, read_float_map
from lix_train.data.kitti_semantics import KITTISemanticsSource
from lix_train.data.stereo import (
    SGBMConfig,
    StereoCalibration,
    compute_disparity,
    depth_from_disparity,
    stereo_calibration,
)

SHIFT = 8
STEREO_SIZE = (64, 128)
SGBM = SGBMConfig(num_disparities=32, block_size=5)


def _interior(a: np.ndarray) -> np.ndarray:
    """Pixels SGBM can match: away from the border and past the disparity search range."""
    return a[8:-8, SGBM.num_disparities + 8 : -8]


def test_labels_map_to_cityscapes_train_ids_without_depth(tmp_path):
    truth = write_kitti_semantics_tree(tmp_path / "data_semantics")
    source = KITTISemanticsSource(tmp_path / "data_semantics")
    assert source.class_set is CITYSCAPES and not source.has_depth
    assert source.names == ["000000_10", "000001_10"]
    for i, stem in enumerate(source.names):
        sample = source[i]
        np.testing.assert_array_equal(sample.rgb, truth[stem]["rgb"])
        np.testing.assert_array_equal(sample.label, truth[stem]["label"])
        assert sample.depth is None and sample.intrinsics is None and sample.name == stem


@pytest.mark.parametrize("style", ["cam_to_cam", "object"])
def test_calibration_gives_focal_baseline_and_k(tmp_path, style):
    calib = stereo_calibration(write_kitti_calib(tmp_path / "000000.txt", style))
    assert calib.focal_px == pytest.approx(KITTI_FOCAL)
    assert calib.baseline_m == pytest.approx(KITTI_BASELINE)
    assert calib.baseline_m == pytest.approx(0.5327, abs=1e-3)  # KITTI's ~0.54 m rig
    np.testing.assert_allclose(calib.intrinsics, [[KITTI_FOCAL, 0, 609.5593], [0, KITTI_FOCAL, 172.854], [0, 0, 1]])


def test_calibration_without_projection_matrices_is_an_error(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("calib_time: 09-Jan-2012 13:57:47\nK_02: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(DatasetError, match="expected rectified projection matrices P_rect_02 and P_rect_03"):
        stereo_calibration(path)


def test_sgbm_recovers_a_constant_shift(tmp_path):
    left, right = shifted_stereo_pair(np.random.default_rng(0), STEREO_SIZE, SHIFT)
    disp = _interior(compute_disparity(left, right, SGBM))
    valid = disp > 0
    assert valid.mean() > 0.9
    assert np.median(disp[valid]) == pytest.approx(SHIFT, abs=0.25)
    assert (np.abs(disp[valid] - SHIFT) <= 0.5).mean() > 0.9
    assert np.all(compute_disparity(left, right, SGBM)[:, : SGBM.num_disparities // 2] == 0)  # unmatchable


def test_left_right_check_keeps_true_matches_and_drops_unmatched_pixels():
    rng = np.random.default_rng(1)
    left, right = shifted_stereo_pair(rng, STEREO_SIZE, SHIFT)
    checked = SGBMConfig(num_disparities=32, lr_check=True)
    disp = _interior(compute_disparity(left, right, checked))
    assert np.median(disp[disp > 0]) == pytest.approx(SHIFT, abs=0.25) and (disp > 0).mean() > 0.9
    occluded = left.copy()
    occluded[20:44, 60:90] = textured_rgb(rng, (24, 30))  # visible in the left view only
    plain = compute_disparity(occluded, right, SGBM)[20:44, 60:90]
    lr = compute_disparity(occluded, right, SGBMConfig(num_disparities=32, lr_check=True))[20:44, 60:90]
    assert (lr > 0).sum() < (plain > 0).sum()


def test_depth_from_disparity_is_f_b_over_d():
    c = StereoCalibration(np.eye(3), 700.0, 0.5)
    np.testing.assert_allclose(depth_from_disparity(np.array([[0.0, 7.0, -1.0, 350.0]]), c), [[0, 50, 0, 1]])


def _stereo_fixture(tmp_path, style="cam_to_cam"):
    rng = np.random.default_rng(2)
    stems = ("000000_10", "000001_10")
    pairs = {stem: shifted_stereo_pair(rng, STEREO_SIZE, SHIFT) for stem in stems}
    write_kitti_semantics_tree(tmp_path / "sem", stems=stems, images={s: p[0] for s, p in pairs.items()})
    write_kitti_stereo_tree(tmp_path / "stereo", {s: p[1] for s, p in pairs.items()}, style)
    return tmp_path / "sem", tmp_path / "stereo"


def test_stereo_root_gives_depth_f_b_over_8_and_caches_disparity(tmp_path):
    sem, stereo = _stereo_fixture(tmp_path)
    cache = tmp_path / "cache"
    source = KITTISemanticsSource(sem, stereo_root=stereo, sgbm=SGBM, cache_dir=cache)
    assert source.has_depth
    sample = source[0]
    np.testing.assert_allclose(sample.intrinsics[0, 0], KITTI_FOCAL)
    assert sample.meta["baseline_m"] == pytest.approx(KITTI_BASELINE)
    depth = _interior(sample.depth)
    expected = KITTI_FOCAL * KITTI_BASELINE / SHIFT
    assert np.median(depth[depth > 0]) == pytest.approx(expected, rel=0.03)
    assert (np.abs(depth[depth > 0] - expected) < 0.07 * expected).mean() > 0.9

    cached = list(cache.glob("sgbm-*/000000_10.png"))
    assert len(cached) == 1
    disparity = read_float_map(cached[0], "png_256", DISPARITY_MAP)
    np.testing.assert_allclose(depth_from_disparity(disparity, stereo_calibration(
        stereo / "training" / "calib_cam_to_cam" / "000000.txt")), sample.depth, rtol=1e-6)
    (stereo / "training" / "image_3" / "000000_10.png").write_bytes(b"corrupt")  # cache hit: never read
    np.testing.assert_array_equal(KITTISemanticsSource(sem, stereo_root=stereo, sgbm=SGBM, cache_dir=cache)[0].depth,
                                  sample.depth)
    other = SGBMConfig(num_disparities=32, block_size=7)
    assert other.cache_key() != SGBM.cache_key()  # other settings never reuse this cache


def test_stereo_root_accepts_object_style_calib(tmp_path):
    sem, stereo = _stereo_fixture(tmp_path, style="object")
    sample = KITTISemanticsSource(sem, stereo_root=stereo, sgbm=SGBM)[1]
    depth = _interior(sample.depth)
    assert np.median(depth[depth > 0]) == pytest.approx(KITTI_FOCAL * KITTI_BASELINE / SHIFT, rel=0.03)


def test_depth_dir_in_millimetres(tmp_path):
    write_kitti_semantics_tree(tmp_path / "sem")
    mm = np.full((24, 40), 12345, np.uint16)
    mm[0, 0] = 0
    for stem in ("000000_10", "000001_10"):
        write_image(tmp_path / "depth" / f"{stem}.png", mm)
    source = KITTISemanticsSource(tmp_path / "sem", depth_dir=tmp_path / "depth")
    assert source.has_depth
    np.testing.assert_allclose(source[1].depth, mm / 1000.0, rtol=1e-6)


def test_disparity_dir_uses_calib_root(tmp_path):
    sem, stereo = _stereo_fixture(tmp_path)
    disp = np.full(STEREO_SIZE, 16 * 256, np.uint16)
    disp[:, :5] = 0
    for stem in ("000000_10", "000001_10"):
        write_image(tmp_path / "disp" / f"{stem}.png", disp)
    sample = KITTISemanticsSource(sem, disparity_dir=tmp_path / "disp", calib_root=stereo)[0]
    assert np.all(sample.depth[:, :5] == 0)
    np.testing.assert_allclose(sample.depth[:, 5:], KITTI_FOCAL * KITTI_BASELINE / 16, rtol=1e-5)


def test_option_validation(tmp_path):
    write_kitti_semantics_tree(tmp_path / "sem")
    with pytest.raises(ValueError, match="at most one source of depth, got stereo_root, depth_dir"):
        KITTISemanticsSource(tmp_path / "sem", stereo_root=tmp_path, depth_dir=tmp_path)
    with pytest.raises(ValueError, match="disparity_dir needs calib_root"):
        KITTISemanticsSource(tmp_path / "sem", disparity_dir=tmp_path)
    with pytest.raises(ValueError, match="depth_format"):
        KITTISemanticsSource(tmp_path / "sem", depth_dir=tmp_path, depth_format="exr")
    with pytest.raises(ValueError, match="num_disparities"):
        SGBMConfig(num_disparities=100)
    with pytest.raises(ValueError, match="block_size"):
        SGBMConfig(block_size=4)
