"""SegmentationDataset over a tiny in-memory source: X before transforms, clear errors, skipping."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lix_train.data.classes import VKITTI2
from lix_train.data.dataset import SegmentationDataset
from lix_train.data.errors import DatasetError
from lix_train.data.modalities import MODALITY_CHANNELS, inverse_depth
from lix_train.data.sample import Sample, intrinsics_matrix
from lix_train.data.transforms import Resize, TransformConfig, build_eval_transforms, build_train_transforms

H, W = 48, 80
K = intrinsics_matrix(60.0, 60.0, 39.5, 23.5)


def ground_plane_depth(k: np.ndarray = K, h: int = H, w: int = W) -> np.ndarray:
    """Road 1.5 m below the camera; sky (above the horizon) unknown."""
    rows = (np.arange(h, dtype=np.float64) - k[1, 2]) / k[1, 1]
    with np.errstate(divide="ignore"):
        z = np.where(rows > 0, 1.5 / rows, 0.0)
    return np.repeat(z[:, None], w, axis=1).astype(np.float32)


class FakeSource:
    """The source contract in memory: __len__, __getitem__ -> Sample, class_set, has_depth, names."""

    class_set = VKITTI2

    def __init__(self, n: int = 4, has_depth: bool = True, intrinsics: bool = True, broken: tuple[int, ...] = ()):
        self.has_depth = has_depth
        self.intrinsics = intrinsics
        self.broken = set(broken)
        self.names = [f"fake/{i:03d}" for i in range(n)]
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        self.reads.append(i)
        if i in self.broken:
            raise DatasetError(f"/data/{self.names[i]}.png", "truncated PNG")
        rng = np.random.default_rng(i)
        return Sample(
            rgb=rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
            label=np.full((H, W), i % VKITTI2.num_classes, np.uint8),
            depth=ground_plane_depth() if self.has_depth else None,
            intrinsics=K if self.intrinsics else None,
            name=self.names[i],
        )


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_items_have_the_documented_layout(modality):
    ds = SegmentationDataset(FakeSource(), modality, build_eval_transforms(TransformConfig(size=(24, 40))))
    item = ds[1]
    assert set(item) == {"image", "x", "label", "name"}
    assert item["image"].shape == (3, 24, 40) and item["image"].dtype == torch.float32
    assert item["x"].shape == (MODALITY_CHANNELS[modality], 24, 40) and item["x"].dtype == torch.float32
    assert item["label"].shape == (24, 40) and item["label"].dtype == torch.int64
    assert item["name"] == "fake/001"
    assert len(ds) == 4 and ds.class_set is VKITTI2


def test_student_only_items_have_no_x_and_need_no_depth():
    ds = SegmentationDataset(FakeSource(has_depth=False, intrinsics=False), None)
    item = ds[0]
    assert set(item) == {"image", "label", "name"}
    assert item["image"].shape == (3, H, W)  # no transforms: tensors at source size, 0..255
    assert torch.equal(item["image"], torch.from_numpy(FakeSource()[0].rgb).permute(2, 0, 1).float())


def test_x_is_computed_at_full_resolution_with_the_true_intrinsics():
    """Normals are encoded before the resize: the road stays (0, -1, 0) at any output size.

    Computing them after a 2x downscale with the unscaled K would tilt them by 11.5 degrees; the
    0.1 degree tolerance is the plane tolerance of test_modalities (float32 rounding only).
    """
    ds = SegmentationDataset(FakeSource(), "normals", lambda frame, rng: Resize((H // 2, W // 2))(frame))
    x = ds[0]["x"].numpy()
    road = np.linalg.norm(x, axis=0) > 0
    assert road.sum() > 0.3 * road.size
    cos = np.clip(-x[1][road], -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 0.1


def test_x_values_match_the_encoding_of_the_sample():
    ds = SegmentationDataset(FakeSource(), "inverse_depth")
    np.testing.assert_array_equal(ds[2]["x"][0].numpy(), inverse_depth(ground_plane_depth()))


def test_disparity_uses_the_sample_baseline_when_it_has_one():
    ds = SegmentationDataset(FakeSource(), "disparity", baseline_m=0.5)
    sample = FakeSource()[0]
    expected = K[0, 0] * inverse_depth(ground_plane_depth())
    np.testing.assert_allclose(ds.frame(sample).x[0], 0.5 * expected, rtol=1e-6)
    sample.meta["baseline_m"] = 0.25
    np.testing.assert_allclose(ds.frame(sample).x[0], 0.25 * expected, rtol=1e-6)


def test_teacher_modality_on_a_source_without_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="dataset X has no depth; teacher runs need X: supply"):
        SegmentationDataset(FakeSource(has_depth=False), "normals")


def test_normals_without_intrinsics_is_a_clear_error():
    ds = SegmentationDataset(FakeSource(intrinsics=False), "normals")
    with pytest.raises(DatasetError, match="fake/000.*needs the camera intrinsics"):
        ds[0]
    assert SegmentationDataset(FakeSource(intrinsics=False), "inverse_depth")[0]["x"].shape == (1, H, W)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"modality": "rgb"}, "modality"), ({"modality": None, "on_error": "ignore"}, "on_error"),
     ({"modality": None, "max_attempts": 0}, "max_attempts")],
)
def test_constructor_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SegmentationDataset(FakeSource(), **kwargs)


def test_errors_propagate_by_default():
    ds = SegmentationDataset(FakeSource(broken=(1,)), "depth")
    with pytest.raises(DatasetError, match="truncated PNG"):
        ds[1]


def test_skip_serves_the_next_sample_counts_and_warns_once_per_name(caplog):
    source = FakeSource(n=5, broken=(1, 2))
    ds = SegmentationDataset(source, "depth", on_error="skip")
    with caplog.at_level(logging.WARNING, logger="lix_train.data.dataset"):
        assert ds[1]["name"] == "fake/003"
        assert ds[2]["name"] == "fake/003"
        assert ds[4]["name"] == "fake/004"
    assert ds.skipped == 2  # distinct bad samples; a known-bad one is not re-read
    assert source.reads.count(1) == 1 and source.reads.count(2) == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "fake/001" in warnings[0] and "truncated PNG" in warnings[0]
    assert "fake/002" in warnings[1]


def test_skip_gives_up_when_everything_fails():
    source = FakeSource(n=3, broken=(0, 1, 2))
    ds = SegmentationDataset(source, None, on_error="skip", max_attempts=10)
    with pytest.raises(DatasetError, match="3 consecutive samples"):
        ds[0]
    assert source.reads == [0, 1, 2]  # bounded by the dataset size


def test_skip_attempts_are_bounded():
    source = FakeSource(n=8, broken=tuple(range(8)))
    with pytest.raises(DatasetError, match="2 consecutive"):
        SegmentationDataset(source, None, on_error="skip", max_attempts=2)[5]
    assert source.reads == [5, 6]


def test_index_out_of_range():
    ds = SegmentationDataset(FakeSource(n=2), None)
    with pytest.raises(IndexError):
        ds[2]
    assert ds[-1]["name"] == "fake/001"


def test_default_collate_batches_items_and_lists_names():
    cfg = TransformConfig(size=(24, 40), crop_size=(16, 32))
    ds = SegmentationDataset(FakeSource(), "normals", build_train_transforms(cfg))
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert batch["image"].shape == (3, 3, 16, 32)
    assert batch["x"].shape == (3, 3, 16, 32)
    assert batch["label"].shape == (3, 16, 32) and batch["label"].dtype == torch.int64
    assert batch["name"] == ["fake/000", "fake/001", "fake/002"]


def test_augmentation_is_reproducible_under_torch_manual_seed():
    ds = SegmentationDataset(FakeSource(), "normals", build_train_transforms(TransformConfig(size=(24, 40), crop_size=(16, 32))))
    torch.manual_seed(0)
    a = ds[0]
    torch.manual_seed(0)
    b = ds[0]
    c = ds[0]  # the generator moved on: a new augmentation
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["x"], b["x"])
    assert not torch.equal(a["image"], c["image"])


# --- the X cache -----------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_x_cache_gives_the_exact_x_and_encodes_each_frame_once(tmp_path, monkeypatch, modality):
    from lix_train.data import dataset as dataset_module
    from lix_train.data.x_cache import XCache

    cached = SegmentationDataset(FakeSource(), modality, x_cache=XCache(tmp_path))
    calls = []
    real = dataset_module.encode_x
    monkeypatch.setattr(dataset_module, "encode_x", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(2):  # two epochs
        for i in range(len(cached)):
            assert torch.equal(cached[i]["x"], SegmentationDataset(FakeSource(), modality)[i]["x"])
    # FakeSource frames share one depth map: one key, one encoding by the cache (+ 8 by the plain ones)
    assert len(calls) == 1 + 8 and len(list(tmp_path.rglob("*.npy"))) == 1


def test_x_cache_keys_change_with_every_input_and_a_damaged_entry_is_recomputed(tmp_path):
    from lix_train.data.x_cache import XCache, x_key

    depth = ground_plane_depth()
    base = x_key(depth, K, "normals", 0.54, 80.0)
    other_depth = depth.copy()
    other_depth[-1, -1] += 0.01
    assert len({base, x_key(other_depth, K, "normals", 0.54, 80.0), x_key(depth, K * 1.01, "normals", 0.54, 80.0),
                x_key(depth, None, "normals", 0.54, 80.0), x_key(depth, K, "depth", 0.54, 80.0),
                x_key(depth, K, "normals", 0.5, 80.0), x_key(depth, K, "normals", 0.54, None)}) == 7
    cache = XCache(tmp_path)
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert cache.get_or_compute(base, lambda: x) is x
    cache.path(base).write_bytes(b"\x93NUMPY truncated")
    again = cache.get_or_compute(base, lambda: x + 1)
    np.testing.assert_array_equal(again, x + 1)
    np.testing.assert_array_equal(cache.get_or_compute(base, lambda: pytest.fail("should read the entry")), x + 1)
    assert not list(tmp_path.rglob("*.tmp"))


def test_x_cache_on_a_read_only_place_still_serves_x(tmp_path):
    from lix_train.data.x_cache import XCache

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = XCache(blocker / "x")  # cannot be created
    x = np.ones((1, 2, 2), np.float32)
    assert cache.get_or_compute("ab" * 16, lambda: x) is x
