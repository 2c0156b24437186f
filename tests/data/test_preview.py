"""The preview figure: RGB | depth | normals | labels of one frame, and its CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lix_train.data import preview
from lix_train.data.preview import depth_colormap, main, normals_image, write_preview
from lix_train.data.procedural.camera import kitti_like_intrinsics
from lix_train.data.synthetic import SyntheticConfig, write_dataset

pytest.importorskip("lix_train.data.modalities")
pytest.importorskip("lix_train.data.vkitti2")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_dataset(root, SyntheticConfig(scenes=1, frames=2, height=48, width=160), workers=1, progress=False)
    return root


def test_write_preview_makes_a_png_figure(tiny_root, tmp_path):
    path = write_preview(tmp_path / "out", tiny_root, index=1)
    assert path == tmp_path / "out" / "preview.png"
    img = cv2.imread(str(path))
    assert img is not None
    # two panels side by side and two rows of panels plus titles and legend
    assert img.shape[1] >= 2 * 160 and img.shape[0] >= 2 * 48


def test_depth_colormap_marks_sky_black_and_near_bright():
    depth = np.array([[2.0, 20.0, 655.35, 0.0]], np.float32)
    img = depth_colormap(depth)
    assert img.shape == (1, 4, 3) and img.dtype == np.uint8
    assert img[0, 2].tolist() == [0, 0, 0] and img[0, 3].tolist() == [0, 0, 0]
    assert img[0, 0].astype(int).sum() > img[0, 1].astype(int).sum()


def test_normals_image_of_a_ground_plane_points_up():
    h, w = 48, 160
    k = kitti_like_intrinsics(h, w)
    v = np.arange(h, dtype=np.float64)[:, None] - k[1, 2]
    # a plane 1.5 m below the camera: depth = 1.5 fy / (v - cy) below the horizon
    depth = np.where(v > 0.5, 1.5 * k[1, 1] / np.maximum(v, 1e-6), 655.35) * np.ones((1, w))
    img = normals_image(depth.astype(np.float32), k)
    ground = img[-10:, 20:-20].reshape(-1, 3).astype(int)
    # n = (0, -1, 0) in the camera frame -> ((n + 1) / 2) * 255 = (128, 0, 128)
    assert np.all(np.abs(ground - [128, 0, 128]) <= 3)
    assert np.all(img[:5] == 0)  # sky has no normal


def test_cli_with_root_writes_and_prints(tiny_root, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "p"), "--root", str(tiny_root), "--index", "0"]) == 0
    assert (tmp_path / "p" / "preview.png").is_file()
    assert str(tmp_path / "p" / "preview.png") in capsys.readouterr().out


def test_cli_without_root_uses_the_embedded_dataset(tiny_root, tmp_path, monkeypatch):
    import lix_train.data.embedded as embedded

    asked = []

    def fake_ensure(cache_dir=None, config=None, progress=True, workers=None):
        asked.append((cache_dir, progress))
        return tiny_root

    monkeypatch.setattr(embedded, "ensure_embedded_dataset", fake_ensure)
    assert main(["--out", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert asked == [(tmp_path / "cache", True)]
    assert (tmp_path / "d" / "preview.png").is_file()


def test_cli_rejects_an_index_out_of_range(tiny_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "p"), "--root", str(tiny_root), "--index", "99"])
    assert exc.value.code == 2
    assert "99" in capsys.readouterr().err


def test_preview_needs_depth_and_intrinsics():
    from lix_train.data.sample import Sample

    sample = Sample(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), name="x")
    with pytest.raises(ValueError, match="depth"):
        preview.preview_png(sample)
