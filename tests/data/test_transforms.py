"""Joint transforms: one geometry for RGB, X and labels; colour for RGB only; flips negate n_x."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lix_train.config import from_dict
from lix_train.data.classes import IGNORE_INDEX
from lix_train.data.modalities import surface_normals
from lix_train.data.sample import intrinsics_matrix
from lix_train.data.transforms import (
    ColorJitter, Compose, Frame, Normalize, RandomCrop, RandomHorizontalFlip, RandomScale, Resize,
    ToTensor, TransformConfig, build_eval_transforms, build_train_transforms,
)

H, W = 40, 64
BLOCK = 5


def coordinate_frame() -> Frame:
    """Image channels hold each pixel's (row, col); X and labels are functions of the same grid.

    X is affine in (row, col), so bilinear resampling keeps x == f(image) exactly wherever the
    two were resampled at the same positions; labels are 5x5 blocks, so a label can be checked
    against the block the image says the pixel came from.
    """
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    image = np.stack([rows, cols, np.full_like(rows, 100.0)], axis=-1)
    x = (1.0 + 0.01 * rows + 0.001 * cols)[None].astype(np.float32)
    label = ((rows // BLOCK) * (W // BLOCK + 1) + cols // BLOCK).astype(np.uint8)
    return Frame(image=image, label=label, x=x, modality="inverse_depth", name="grid")


def block_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return (np.floor(rows / BLOCK) * (W // BLOCK + 1) + np.floor(cols / BLOCK)).astype(np.int64)


def random_normals(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    n = rng.normal(size=(3, h, w)).astype(np.float32)
    n[2] = -np.abs(n[2]) - 0.1
    return n / np.linalg.norm(n, axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_scale_crop_flip_apply_one_geometry_to_image_x_and_label(seed):
    pipeline = Compose([RandomScale((0.6, 1.7)), RandomCrop((48, 56)), RandomHorizontalFlip(0.5)])
    out = pipeline(coordinate_frame(), np.random.default_rng(seed))
    src_row, src_col = out.image[..., 0], out.image[..., 1]
    real = out.image[..., 2] > 0
    padded = ~real
    # Padding is the same pixels in all three arrays.
    assert np.all(out.label[padded] == IGNORE_INDEX)
    assert np.all(out.x[:, padded] == 0) and np.all(out.image[padded] == 0)
    assert np.all(out.label[real] != IGNORE_INDEX)
    # X was resampled at the positions the image was.
    np.testing.assert_allclose(out.x[0][real], 1.0 + 0.01 * src_row[real] + 0.001 * src_col[real], atol=1e-4)
    # Labels come from the nearest source pixel (never blended); skip ties at exact half pixels.
    r, c = np.round(src_row), np.round(src_col)
    clear = real & (np.abs(np.abs(src_row - r) - 0.5) > 1e-3) & (np.abs(np.abs(src_col - c) - 0.5) > 1e-3)
    assert clear.sum() > 0.5 * real.sum()
    np.testing.assert_array_equal(out.label[clear], block_of(r[clear], c[clear]))


def test_flip_happens_with_its_probability_and_mirrors_columns():
    frame = coordinate_frame()
    flipped = [RandomHorizontalFlip(0.5)(frame, np.random.default_rng(s)) for s in range(40)]
    mirrored = [f for f in flipped if f.image[0, 0, 1] == W - 1]
    assert 5 < len(mirrored) < 35
    for f in mirrored:
        np.testing.assert_array_equal(f.image, frame.image[:, ::-1])
        np.testing.assert_array_equal(f.label, frame.label[:, ::-1])
        np.testing.assert_array_equal(f.x, frame.x[:, :, ::-1])  # depth-like X: mirrored, not negated
    assert RandomHorizontalFlip(0.0)(frame, np.random.default_rng(0)) is frame


def test_flip_negates_nx_and_only_nx():
    rng = np.random.default_rng(0)
    normals = random_normals(rng)
    frame = Frame(image=rng.integers(0, 255, (H, W, 3), dtype=np.uint8), label=np.zeros((H, W), np.uint8),
                  x=normals, modality="normals")
    out = RandomHorizontalFlip(1.0)(frame, rng)
    np.testing.assert_array_equal(out.x[0], -normals[0][:, ::-1])
    np.testing.assert_array_equal(out.x[1:], normals[1:, :, ::-1])
    np.testing.assert_array_equal(frame.x, normals)  # the input is not modified


def test_negating_nx_matches_normals_of_the_mirrored_camera():
    """Why n_x flips: normals computed from mirrored depth (cx -> W-1-cx) equal the flipped normals."""
    rng = np.random.default_rng(3)
    depth = cv2.GaussianBlur(rng.uniform(4.0, 20.0, (H, W)).astype(np.float32), (0, 0), 3.0)
    k = intrinsics_matrix(50.0, 50.0, 25.0, 18.0)
    mirrored_k = intrinsics_matrix(50.0, 50.0, W - 1 - 25.0, 18.0)
    normals = surface_normals(depth, k).transpose(2, 0, 1)
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), label=np.zeros((H, W), np.uint8), x=normals, modality="normals")
    flipped = RandomHorizontalFlip(1.0)(frame, rng).x
    expected = surface_normals(np.ascontiguousarray(depth[:, ::-1]), mirrored_k).transpose(2, 0, 1)
    np.testing.assert_allclose(flipped, expected, atol=1e-4)


def test_color_jitter_touches_rgb_only():
    rng = np.random.default_rng(0)
    frame = Frame(image=rng.integers(0, 255, (H, W, 3), dtype=np.uint8), label=rng.integers(0, 5, (H, W), dtype=np.uint8),
                  x=random_normals(rng), modality="normals")
    x_before, label_before = frame.x.copy(), frame.label.copy()
    out = ColorJitter(0.4, 0.4, 0.4, 0.1)(frame, np.random.default_rng(1))
    np.testing.assert_array_equal(out.x, x_before)
    np.testing.assert_array_equal(out.label, label_before)
    assert out.image.dtype == np.float32 and out.image.min() >= 0 and out.image.max() <= 255
    assert np.abs(out.image - frame.image).mean() > 1.0


def test_color_jitter_with_zero_strength_is_identity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frame = Frame(image=image, label=np.zeros((H, W), np.uint8))
    np.testing.assert_allclose(ColorJitter()(frame, rng).image, image, atol=1e-3)


def test_crop_pads_with_ignore_index_zero_image_and_unknown_x():
    rng = np.random.default_rng(0)
    frame = Frame(image=np.full((10, 12, 3), 7, np.uint8), label=np.full((10, 12), 3, np.uint8),
                  x=np.ones((1, 10, 12), np.float32), modality="depth")
    out = RandomCrop((16, 20))(frame, rng)
    assert out.size == (16, 20)
    np.testing.assert_array_equal(out.label[:10, :12], 3)
    assert np.all(out.label[10:] == IGNORE_INDEX) and np.all(out.label[:, 12:] == IGNORE_INDEX)
    assert np.all(out.image[10:] == 0) and np.all(out.image[:, 12:] == 0)
    assert np.all(out.x[:, 10:] == 0) and np.all(out.x[:, :, 12:] == 0)


def test_label_ids_are_never_interpolated():
    rng = np.random.default_rng(0)
    ids = np.array([0, 3, 7, 12, IGNORE_INDEX], np.uint8)
    label = ids[rng.integers(0, len(ids), (H, W))]
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), label=label)
    for scale in (0.37, 0.8, 1.33, 2.5):
        out = RandomScale((scale, scale))(frame, rng)
        assert set(np.unique(out.label)) <= set(ids)
    assert set(np.unique(Resize((17, 23))(frame).label)) <= set(ids)


def test_scaled_normals_stay_unit_and_unknown_stays_unknown():
    rng = np.random.default_rng(0)
    normals = random_normals(rng)
    normals[:, 10:20, 10:30] = 0.0
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), label=np.zeros((H, W), np.uint8), x=normals, modality="normals")
    out = RandomScale((1.6, 1.6))(frame, rng)
    length = np.linalg.norm(out.x, axis=0)
    known = length > 0
    np.testing.assert_allclose(length[known], 1.0, atol=1e-5)
    assert np.all(~known[20:28, 20:44])  # well inside the scaled hole


def test_resizing_x_does_not_blend_known_values_with_unknown():
    x = np.full((1, H, W), 0.5, np.float32)
    x[:, :, W // 2 :] = 0.0
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), label=np.zeros((H, W), np.uint8), x=x, modality="inverse_depth")
    for size in ((23, 37), (61, 90)):
        out = Resize(size)(frame).x
        values = np.unique(out)
        np.testing.assert_allclose(values[values > 0], 0.5)
        assert 0.0 in values


def test_disparity_scales_with_image_width():
    x = np.full((1, H, W), 10.0, np.float32)
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), label=np.zeros((H, W), np.uint8), x=x, modality="disparity")
    out = Resize((H // 2, W // 2))(frame)
    np.testing.assert_allclose(out.x, 5.0, rtol=1e-6)
    depth = Resize((H // 2, W // 2))(frame.replace(modality="depth"))
    np.testing.assert_allclose(depth.x, 10.0, rtol=1e-6)


def test_normalize_per_modality():
    image = np.full((4, 5, 3), 255, np.uint8)
    label = np.zeros((4, 5), np.uint8)
    norm = Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), inverse_depth_min_m=2.0,
                     disparity_max_px=100.0, depth_max_m=50.0)
    out = norm(Frame(image=image, label=label))
    np.testing.assert_allclose(out.image[0, 0], [2.0, 1.0, 0.5], rtol=1e-6)
    normals = random_normals(np.random.default_rng(0), 4, 5)
    np.testing.assert_array_equal(norm(Frame(image, label, normals, "normals")).x, normals)
    inv = np.array([[[0.0, 0.1, 0.4, 1.0, 3.0]]], np.float32).repeat(4, axis=1)
    np.testing.assert_allclose(norm(Frame(image, label, inv, "inverse_depth")).x[0, 0], [0, 0.2, 0.8, 1, 1], rtol=1e-6)
    disp = np.array([[[0.0, 10.0, 50.0, 100.0, 300.0]]], np.float32).repeat(4, axis=1)
    np.testing.assert_allclose(norm(Frame(image, label, disp, "disparity")).x[0, 0], [0, 0.1, 0.5, 1, 1], rtol=1e-6)
    depth = np.array([[[0.0, 5.0, 25.0, 50.0, 655.0]]], np.float32).repeat(4, axis=1)
    np.testing.assert_allclose(norm(Frame(image, label, depth, "depth")).x[0, 0], [0, 0.1, 0.5, 1, 1], rtol=1e-6)


def test_to_tensor_layouts_and_dtypes():
    frame = coordinate_frame()
    out = ToTensor()(frame)
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.float32
    assert out["x"].shape == (1, H, W) and out["x"].dtype == torch.float32
    assert out["label"].shape == (H, W) and out["label"].dtype == torch.int64
    assert out["name"] == "grid"
    assert torch.equal(out["image"][1], torch.from_numpy(frame.image[..., 1]))
    assert "x" not in ToTensor()(Frame(image=frame.image, label=frame.label))


def test_train_pipeline_is_reproducible_from_a_seed():
    cfg = TransformConfig(size=(32, 48), crop_size=(24, 40), hue=0.05)
    pipeline = build_train_transforms(cfg)
    frame = coordinate_frame().replace(image=np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    a = pipeline(frame, np.random.default_rng(7))
    b = pipeline(frame, np.random.default_rng(7))
    c = pipeline(frame, np.random.default_rng(8))
    assert a["image"].shape == (3, 24, 40) and a["x"].shape == (1, 24, 40) and a["label"].shape == (24, 40)
    for key in ("image", "x", "label"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])


def test_eval_pipeline_is_deterministic():
    cfg = TransformConfig(size=(32, 48))
    pipeline = build_eval_transforms(cfg)
    frame = coordinate_frame()
    a = pipeline(frame, np.random.default_rng(1))
    b = pipeline(frame, np.random.default_rng(2))
    assert a["image"].shape == (3, 32, 48) and a["label"].shape == (32, 48)
    for key in ("image", "x", "label"):
        assert torch.equal(a[key], b[key])


def test_config_from_yaml_style_mapping():
    cfg = from_dict(TransformConfig, {"crop_size": [96, 128], "scale_range": "0.5,2.0", "hflip_prob": 0.0})
    assert cfg.crop_size == (96, 128) and cfg.scale_range == (0.5, 2.0) and cfg.hflip_prob == 0.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"crop_size": (0, 64)}, "crop_size"),
        ({"crop_size": (64,)}, "crop_size"),
        ({"size": (32.5, 64)}, "size"),
        ({"scale_range": (2.0, 1.0)}, "scale_range"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"hflip_prob": 1.5}, "hflip_prob"),
        ({"brightness": -0.1}, "brightness"),
        ({"saturation": 1.2}, "saturation"),
        ({"hue": 0.6}, "hue"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"depth_max_m": 0.0}, "depth_max_m"),
    ],
)
def test_config_validation_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TransformConfig(**kwargs)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: RandomScale((1.5, 0.5)), "scale_range"),
        (lambda: RandomCrop((0, 4)), "size"),
        (lambda: RandomHorizontalFlip(2.0), "prob"),
        (lambda: ColorJitter(hue=0.7), "hue"),
        (lambda: Normalize(std=(1.0, 0.0, 1.0)), "std"),
    ],
)
def test_transform_arguments_are_validated(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_frame_validation():
    image, label = np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8)
    with pytest.raises(ValueError, match="x must be"):
        Frame(image, label, np.zeros((1, 4, 5), np.float32), "normals")
    with pytest.raises(ValueError, match="modality"):
        Frame(image, label, np.zeros((1, 4, 5), np.float32), None)
    with pytest.raises(ValueError, match="label"):
        Frame(image, np.zeros((4, 6), np.uint8))


def _resize_x_reference(x: np.ndarray, modality: str, size: tuple[int, int]) -> np.ndarray:
    """_resize_x as first written (transpose copy, np.linalg.norm on a strided view): the bits to keep."""
    from lix_common.interpolation import image_interpolation

    h, w = size
    interpolation = image_interpolation(x.shape[1:], (h, w)) or cv2.INTER_LINEAR
    known = np.any(x != 0, axis=0).astype(np.float32)
    weight = cv2.resize(known, (w, h), interpolation=interpolation)
    out = cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (w, h), interpolation=interpolation)
    out = out.reshape(h, w, -1).transpose(2, 0, 1)
    keep = weight >= 0.5
    if modality == "normals":
        norm = np.linalg.norm(out, axis=0)
        keep &= norm > 0
        out = out / np.where(keep, norm, 1.0)
    else:
        out = out / np.where(keep, weight, 1.0)
        if modality == "disparity":
            out = out * np.float32(w / x.shape[2])
    return np.ascontiguousarray(out * keep, dtype=np.float32)


@pytest.mark.parametrize("modality", ["normals", "inverse_depth", "disparity", "depth"])
def test_resize_x_is_bit_identical_to_the_reference(modality):
    """The faster _resize_x (cv2.merge, norm on planes) must not move a single bit of X."""
    from lix_train.data.transforms import _resize_x

    rng = np.random.default_rng(7)
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(6, 70, 2))
        c = 3 if modality == "normals" else 1
        x = rng.standard_normal((c, h, w)).astype(np.float32) * rng.uniform(0.1, 9.0, (1, h, w)).astype(np.float32)
        x = x if modality == "normals" else np.abs(x)
        x[:, rng.random((h, w)) < 0.3] = 0.0
        sizes = [(h // 2, w // 2), (h * 2, w * 2), tuple(int(v) for v in rng.integers(3, 100, 2))]
        for size in sizes:
            size = (max(1, size[0]), max(1, size[1]))
            want, got = _resize_x_reference(x, modality, size), _resize_x(x, modality, size)
            assert got.shape == want.shape and got.flags.c_contiguous
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (trial, size)
