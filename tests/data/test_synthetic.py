"""The procedural generator: exact vKITTI2 layout and formats, determinism, geometry, ambiguity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lix_train.data.classes import VKITTI2_CATEGORIES
from lix_train.data.procedural.appearance import object_albedo
from lix_train.data.procedural.camera import VKITTI2_K, kitti_like_intrinsics, project
from lix_train.data.procedural.raycast import (
    cast,
    intersect_boxes,
    intersect_cylinders,
    intersect_ellipsoids,
    screen_rects,
)
from lix_train.data.procedural.scene import CATEGORY
from lix_train.data.procedural.street import build_scene
from lix_train.data.sample import scale_intrinsics
from lix_train.data.synthetic import SyntheticConfig, main, render_frame, write_dataset

H, W = 48, 160
SMALL = SyntheticConfig(scenes=2, frames=3, height=H, width=W, seed=3, variations=("clone", "fog"))
COLOURS = {c: n for n, c in VKITTI2_CATEGORIES}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SMALL, workers=1, progress=False)
    return root


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _frame(root: Path, scene: str, variation: str, kind: str, frame: int, camera: str = "Camera_0") -> Path:
    folder, prefix, ext = {
        "rgb": ("rgb", "rgb", "jpg"), "depth": ("depth", "depth", "png"),
        "classgt": ("classSegmentation", "classgt", "png"),
    }[kind]
    return root / scene / variation / "frames" / folder / camera / f"{prefix}_{frame:05d}.{ext}"


def test_files_have_vkitti2_names(small_root):
    for scene in ("Scene01", "Scene02"):
        for variation in ("clone", "fog"):
            for name in ("colors.txt", "intrinsic.txt", "extrinsic.txt"):
                assert (small_root / scene / variation / name).is_file()
            for kind in ("rgb", "depth", "classgt"):
                folder = _frame(small_root, scene, variation, kind, 0).parent
                assert sorted(p.name for p in folder.iterdir()) == [
                    _frame(small_root, scene, variation, kind, f).name for f in range(3)
                ]
    assert sorted(p.name for p in small_root.iterdir()) == ["Scene01", "Scene02", "synthetic.json"]


def test_colors_txt_is_exact(small_root):
    text = (small_root / "Scene01" / "clone" / "colors.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "Category r g b"
    assert lines[1] == "Terrain 210 0 200"
    assert lines[-1] == "Undefined 0 0 0"
    assert lines[1:] == [f"{n} {r} {g} {b}" for n, (r, g, b) in VKITTI2_CATEGORIES]


def test_intrinsic_txt_is_exact_and_scaled(small_root):
    lines = (small_root / "Scene02" / "fog" / "intrinsic.txt").read_text().splitlines()
    assert lines[0] == "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
    assert len(lines) == 1 + 3
    k = scale_intrinsics(VKITTI2_K, W / 1242, H / 375)
    for f, line in enumerate(lines[1:]):
        fields = line.split(" ")
        assert fields[:2] == [str(f), "0"]
        np.testing.assert_allclose([float(v) for v in fields[2:]], [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], atol=1e-5)


def test_intrinsics_reference_values():
    k = kitti_like_intrinsics(375, 1242)
    np.testing.assert_allclose(k, VKITTI2_K)
    k = kitti_like_intrinsics(192, 640)
    assert k[0, 0] == pytest.approx(725.0087 * 640 / 1242)
    assert k[1, 1] == pytest.approx(725.0087 * 192 / 375)
    assert k[0, 2] == pytest.approx((620.5 + 0.5) * 640 / 1242 - 0.5)
    assert k[1, 2] == pytest.approx((187.0 + 0.5) * 192 / 375 - 0.5)


def test_depth_is_uint16_centimetres_with_sky_65535(small_root):
    for f in range(3):
        depth = _read(_frame(small_root, "Scene01", "clone", "depth", f))
        label = _read(_frame(small_root, "Scene01", "clone", "classgt", f))[..., ::-1]
        assert depth.dtype == np.uint16 and depth.shape == (H, W)
        sky = np.all(label == VKITTI2_CATEGORIES[CATEGORY["Sky"]][1], axis=-1)
        assert sky.any() and (~sky).any()
        assert np.all(depth[sky] == 65535)
        assert np.all(depth[~sky] <= 65534) and np.all(depth[~sky] > 0)
        # the road right in front of a camera about 1.5 m high is a few metres away
        assert 200 < np.median(depth[-3:, W // 2 - 5 : W // 2 + 5]) < 2000


def test_label_colours_are_categories_and_rgb_is_jpeg(small_root):
    seen = set()
    for scene in ("Scene01", "Scene02"):
        for f in range(3):
            label = _read(_frame(small_root, scene, "clone", "classgt", f))[..., ::-1]
            assert label.dtype == np.uint8 and label.shape == (H, W, 3)
            seen |= {tuple(int(v) for v in c) for c in np.unique(label.reshape(-1, 3), axis=0)}
            rgb = _read(_frame(small_root, scene, "clone", "rgb", f))
            assert rgb.shape == (H, W, 3)
    assert seen <= set(COLOURS), seen - set(COLOURS)
    assert "Undefined" not in {COLOURS[c] for c in seen}
    assert {"Road", "Sky", "Building"} <= {COLOURS[c] for c in seen}


def test_same_seed_gives_identical_files_and_other_seed_differs(small_root, tmp_path):
    again = tmp_path / "again"
    write_dataset(again, SMALL, workers=1, progress=False)
    for kind in ("rgb", "depth", "classgt"):
        for f in range(3):
            a = _frame(small_root, "Scene02", "fog", kind, f).read_bytes()
            assert a == _frame(again, "Scene02", "fog", kind, f).read_bytes(), (kind, f)
    other = tmp_path / "other"
    write_dataset(other, SyntheticConfig(**{**SMALL.__dict__, "seed": 4, "scenes": 1}), workers=1, progress=False)
    for kind in ("depth", "classgt"):
        assert _frame(small_root, "Scene01", "clone", kind, 0).read_bytes() != _frame(
            other, "Scene01", "clone", kind, 0
        ).read_bytes()


def test_variations_share_depth_and_labels_but_not_rgb(small_root):
    for f in range(3):
        for kind in ("depth", "classgt"):
            assert np.array_equal(_read(_frame(small_root, "Scene01", "clone", kind, f)),
                                  _read(_frame(small_root, "Scene01", "fog", kind, f)))
        clone = _read(_frame(small_root, "Scene01", "clone", "rgb", f)).astype(int)
        fog = _read(_frame(small_root, "Scene01", "fog", "rgb", f)).astype(int)
        assert np.abs(clone - fog).mean() > 5


def test_camera_drives_forward_and_static_objects_come_closer():
    scene = build_scene(0, 0, frames=4)
    k = kitti_like_intrinsics(96, 320)
    z = [scene.camera_origin(f)[2] for f in range(4)]
    assert np.all(np.diff(z) > 0.5)
    assert scene.camera_origin(0)[1] == pytest.approx(1.5, abs=0.11)
    hits = [cast(scene, f, k, 96, 320) for f in (0, 1)]
    boxes = scene.shapes["box"]
    static = scene.obj_velocity[boxes.obj] == 0
    checked = 0
    for i in np.flatnonzero(static):
        centre = (boxes.params[i, :3] + boxes.params[i, 3:]) / 2
        uvz = [project(centre[None], scene.camera_origin(f), k)[0] for f in (0, 1)]
        pix = [(int(round(v)), int(round(u))) for u, v, zz in uvz]
        if not all(zz > 3 and 0 <= v < 96 and 0 <= u < 320 for (u, v, zz) in uvz):
            continue
        if not all(h.obj[p] == boxes.obj[i] for h, p in zip(hits, pix)):
            continue  # occluded in one of the frames
        assert hits[1].depth[pix[1]] < hits[0].depth[pix[0]] - 0.5
        checked += 1
    assert checked >= 3


def test_road_in_front_faces_up():
    pytest.importorskip("lix_train.data.modalities")
    from lix_train.data.modalities import surface_normals

    config = SyntheticConfig(scenes=1, frames=1, height=96, width=320)
    frame = render_frame(config, 0, 0)
    depth_m = frame.depth_cm["Camera_0"].astype(np.float32) / 100.0
    patch = (slice(-12, -2), slice(140, 180))
    assert np.all(frame.category["Camera_0"][patch] == CATEGORY["Road"])
    normals = surface_normals(depth_m, config.intrinsics())
    # camera frame: y points down, so a road facing up has n_y close to -1
    assert np.median(normals[patch][..., 1]) < -0.97


GREY_GROUP = ("Road", "Building", "Car", "Van", "Truck", "Pole", "GuardRail", "TrafficSign", "TrafficLight", "Misc")
GREEN_GROUP = ("Terrain", "Tree", "Vegetation")


def _spread(means: dict[str, np.ndarray]) -> float:
    """Largest distance between two class means."""
    return max(float(np.linalg.norm(a - b)) for a in means.values() for b in means.values())


@pytest.mark.parametrize("classes", [GREY_GROUP, GREEN_GROUP])
def test_ambiguity_one_gives_a_palette_group_the_same_mean_albedo(classes):
    scenes = [build_scene(0, s, frames=30) for s in range(12)]
    cats = np.concatenate([sc.obj_category for sc in scenes])

    def spread(ambiguity: float) -> float:
        albedo = np.concatenate([object_albedo(sc, ambiguity) for sc in scenes])
        return _spread({c: albedo[cats == CATEGORY[c]].mean(axis=0) for c in classes})

    assert spread(0.0) > 0.3  # own colours: classes apart
    assert spread(1.0) < 0.1  # shared palette: the class means coincide up to sampling noise


def _mean_chroma(ambiguity: float, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per class, the mean of (pixel colour - its grey level) over a few rendered frames."""
    config = SyntheticConfig(scenes=3, frames=2, height=64, width=208, ambiguity=ambiguity)
    sums = {c: [np.zeros(3), 0] for c in classes}
    for s in range(3):
        for f in range(2):
            frame = render_frame(config, s, f)
            cat, rgb = frame.category["Camera_0"], frame.rgb["clone"]["Camera_0"].astype(float)
            chroma = rgb - rgb.mean(axis=-1, keepdims=True)
            for c in classes:
                m = cat == CATEGORY[c]
                sums[c][0] += chroma[m].sum(axis=0)
                sums[c][1] += m.sum()
    assert all(n > 0 for _, n in sums.values()), {c: n for c, (_, n) in sums.items()}
    return {c: total / n for c, (total, n) in sums.items()}


@pytest.mark.parametrize("classes", [("Road", "Building", "Car", "Van", "Truck"), GREEN_GROUP])
def test_ambiguity_merges_rendered_class_colours(classes):
    distinct = _spread(_mean_chroma(0.0, classes))
    shared = _spread(_mean_chroma(1.0, classes))
    assert distinct > 20
    assert shared < 0.5 * distinct


def test_ambiguity_changes_rgb_only():
    a = render_frame(SyntheticConfig(scenes=1, frames=1, height=32, width=96, ambiguity=0.0), 0, 0)
    b = render_frame(SyntheticConfig(scenes=1, frames=1, height=32, width=96, ambiguity=1.0), 0, 0)
    assert np.array_equal(a.category["Camera_0"], b.category["Camera_0"])
    assert np.array_equal(a.depth_cm["Camera_0"], b.depth_cm["Camera_0"])
    assert not np.array_equal(a.rgb["clone"]["Camera_0"], b.rgb["clone"]["Camera_0"])


def test_stereo_writes_camera_1_to_the_right(tmp_path):
    config = SyntheticConfig(scenes=1, frames=2, height=32, width=96, stereo=True)
    write_dataset(tmp_path, config, workers=1, progress=False)
    lines = (tmp_path / "Scene01" / "clone" / "intrinsic.txt").read_text().splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["0", "0"], ["0", "1"], ["1", "0"], ["1", "1"]]
    ext = (tmp_path / "Scene01" / "clone" / "extrinsic.txt").read_text().splitlines()
    t0 = float(ext[1].split()[5])
    t1 = float(ext[2].split()[5])
    assert t0 - t1 == pytest.approx(0.532)  # world-to-camera x translation of a camera 0.532 m further right
    assert _frame(tmp_path, "Scene01", "clone", "rgb", 1, "Camera_1").is_file()
    d0 = _read(_frame(tmp_path, "Scene01", "clone", "depth", 0, "Camera_0"))
    d1 = _read(_frame(tmp_path, "Scene01", "clone", "depth", 0, "Camera_1"))
    assert not np.array_equal(d0, d1)


# ----------------------------------------------------------------- ray casting primitives


def _grid(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([x], np.float32), np.array([y], np.float32)


def test_box_cylinder_ellipsoid_hits_match_closed_form():
    o = np.zeros(3, np.float32)
    dx, dy = _grid(1e-9, 1e-9)  # straight ahead
    box = np.array([[-1, -1, 5, 1, 1, 6]], np.float32)
    assert intersect_boxes(o, dx, dy, box)[0, 0, 0] == pytest.approx(5.0)
    cyl = np.array([[0.0, 10.0, 0.5, -2.0, 2.0]], np.float32)
    assert intersect_cylinders(o, dx, dy, cyl)[0, 0, 0] == pytest.approx(9.5)
    ell = np.array([[0, 0, 20, 1, 1, 2]], np.float32)
    assert intersect_ellipsoids(o, dx, dy, ell)[0, 0, 0] == pytest.approx(18.0)
    # a ray going right at 45 degrees meets the plane x = 3 of a box at t = 3 (z-depth 3)
    dx, dy = _grid(1.0, 1e-9)
    side = np.array([[3, -1, 0, 4, 1, 10]], np.float32)
    assert intersect_boxes(o, dx, dy, side)[0, 0, 0] == pytest.approx(3.0)
    # misses and objects behind the camera give inf
    behind = np.array([[-1, -1, -6, 1, 1, -5]], np.float32)
    assert np.isinf(intersect_boxes(o, dx, dy, behind)).all()
    dx, dy = _grid(1e-9, 1e-9)
    assert np.isinf(intersect_cylinders(o, dx, dy, np.array([[5.0, 10.0, 0.5, -2, 2]], np.float32))).all()


def test_cylinder_top_cap_is_seen_from_above():
    o = np.array([0.0, 5.0, 0.0], np.float32)
    dx, dy = _grid(1e-9, -0.5)  # down-forward: reaches y = 1 at t = 8
    cyl = np.array([[0.0, 8.0, 1.0, 0.0, 1.0]], np.float32)
    assert intersect_cylinders(o, dx, dy, cyl)[0, 0, 0] == pytest.approx(8.0)


def test_screen_rects_cover_projected_corners():
    k = kitti_like_intrinsics(96, 320)
    origin = np.array([0.0, 1.5, 0.0])
    lo = np.array([[1.0, 0.0, 10.0], [-50, 0, -20], [-3, 0, -2]])
    hi = np.array([[2.0, 1.0, 12.0], [-49, 1, -19], [3, 3, 8]])
    rects, vis = screen_rects(lo, hi, origin, k, 96, 320)
    assert vis.tolist() == [True, False, True]
    corners = np.array([[x, y, z] for x in (1, 2) for y in (0, 1) for z in (10, 12)], float)
    uvz = project(corners, origin, k)
    u0, u1, v0, v1 = rects[0]
    assert u0 <= uvz[:, 0].min() and uvz[:, 0].max() < u1
    assert v0 <= uvz[:, 1].min() and uvz[:, 1].max() < v1
    assert rects[2].tolist()[0] == 0 and rects[2].tolist()[2] == 0  # straddles the camera: clipped to the image


# ----------------------------------------------------------------- CLI


def test_cli_renders_a_tiny_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--out", str(out), "--scenes", "3", "--frames", "1", "--height", "32", "--width", "96",
                 "--seed", "1", "--variations", "clone", "rain", "--workers", "1", "--no-progress"])
    assert code == 0
    assert _frame(out, "Scene01", "rain", "rgb", 0).is_file()
    assert str(out) in capsys.readouterr().out


def test_cli_output_is_a_data_root_with_a_drive_split(tmp_path):
    """The README's generator command must give a folder `--data.root DIR` can train on (splits.json)."""
    from lix_train.config import from_dict
    from lix_train.data.build import build_datasets
    from lix_train.data.config import DataConfig

    out = tmp_path / "gen"
    assert main(["--out", str(out), "--scenes", "4", "--frames", "2", "--height", "32", "--width", "96",
                 "--workers", "1", "--no-progress"]) == 0
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(sum(splits.values(), [])) == ["Scene01", "Scene02", "Scene03", "Scene04"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    cfg = from_dict(DataConfig, {"root": str(out), "transforms": {"size": [32, 96], "crop_size": [32, 96]}})
    sizes = {split: len(ds) for split, ds in build_datasets(cfg, None).items()}
    assert sizes == {"train": 4, "val": 2, "test": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--height", "-48"], "height"),
        (["--width", "8"], "width"),
        (["--scenes", "0"], "scenes"),
        (["--frames", "0"], "frames"),
        (["--ambiguity", "1.5"], "ambiguity"),
        (["--variations", "snow"], "snow"),
        (["--workers", "0"], "workers"),
        (["--scenes", "2"], "--scenes 2 cannot give train, val (1) and test (1)"),
        (["--scenes", "4", "--test-scenes", "3"], "test (3)"),
    ],
)
def test_cli_rejects_bad_parameters(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match="variations must not repeat"):
        SyntheticConfig(variations=("clone", "clone"))
    with pytest.raises(ValueError, match="jpeg_quality"):
        SyntheticConfig(jpeg_quality=0)


def test_worker_processes_write_the_same_bytes(small_root, tmp_path):
    parallel = tmp_path / "parallel"
    summary = write_dataset(parallel, SMALL, workers=2, progress=False)
    assert summary["frames_rendered"] == 6 and summary["images_written"] == 12
    for kind in ("rgb", "depth", "classgt"):
        for f in range(3):
            assert _frame(parallel, "Scene01", "fog", kind, f).read_bytes() == _frame(
                small_root, "Scene01", "fog", kind, f
            ).read_bytes()
