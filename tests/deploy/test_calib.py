"""Calibration sets: runtime-identical preprocessing, deterministic frame choice, hashes that catch tampering."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deploy_fixtures import tiny_dataset_root
from lix_deploy.artifact import sha256_file
from lix_deploy.calib import (
    INPUTS, LABELS, MANIFEST, PREPROCESSING, CalibrationError, load_calibration_set, main, select_frames,
    write_calibration_set,
)
from lix_deploy.runtime.preprocess import to_model_input
from lix_train.data.embedded import embedded_splits
from lix_train.data.vkitti2 import VKITTI2Source
from repo_paths import ROOT

SIZE = (32, 96)  # shrinks the 64x128 frames (INTER_AREA in the runtime); width ratio differs from height's


def _write(out: Path, **options) -> dict:
    kwargs = dict(dataset="synthetic", root=tiny_dataset_root(), split="train", num=3, size=SIZE, progress=False)
    kwargs.update(options)
    return write_calibration_set(out, **kwargs)


def test_select_frames_is_deterministic_and_spread_over_scenes():
    names = [f"Scene{s:02d}/clone/Camera_0/{f:05d}" for s in (1, 2, 3) for f in range(10)]
    picked = select_frames(names, 6, seed=0)
    assert picked == select_frames(names, 6, seed=0) == sorted(picked)
    assert sorted(n.split("/")[0] for n in np.asarray(names)[picked]) == ["Scene01"] * 2 + ["Scene02"] * 2 + \
        ["Scene03"] * 2
    assert select_frames(names, 6, seed=1) != picked
    assert select_frames(names, 30, seed=0) == list(range(30))
    unbalanced = ["A/0", "A/1", "A/2", "A/3", "B/0"]
    assert [unbalanced[i][0] for i in select_frames(unbalanced, 3)].count("B") == 1
    with pytest.raises(ValueError, match="only 30"):
        select_frames(names, 31)


def test_set_matches_the_runtime_preprocessing_and_its_manifest(tmp_path):
    root = tiny_dataset_root()
    manifest = _write(tmp_path / "set")
    inputs, labels, loaded = load_calibration_set(tmp_path / "set")
    assert loaded == manifest
    assert manifest["preprocessing"] == PREPROCESSING and manifest["encoding"] == "rgb8"
    assert manifest["input_size"] == list(SIZE) and manifest["num"] == 3 and manifest["split"] == "train"
    assert inputs.dtype == np.float32 and inputs.shape == (3, 3, *SIZE)
    assert labels.dtype == np.uint8 and labels.shape == (3, *SIZE)
    assert manifest["tensor_sha256"] == sha256_file(tmp_path / "set" / INPUTS)
    assert manifest["labels_sha256"] == sha256_file(tmp_path / "set" / LABELS)

    source = VKITTI2Source(root, scenes=embedded_splits(root)["train"])
    for row, entry in enumerate(manifest["files"]):
        assert entry["hashed"] == "file" and sha256_file(root / entry["source"]) == entry["sha256"]
        sample = source[entry["index"]]
        # bit-identical to what the runtime would feed the model for this camera frame
        np.testing.assert_array_equal(inputs[row], to_model_input(sample.rgb, "rgb8", SIZE)[0])
        truth = cv2.resize(sample.label, SIZE[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(labels[row], truth)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_same_seed_same_set_and_other_seed_other_frames(tmp_path):
    first, second = _write(tmp_path / "a", num=4), _write(tmp_path / "b", num=4)
    assert first["files"] == second["files"] and first["tensor_sha256"] == second["tensor_sha256"]
    assert (tmp_path / "a" / INPUTS).read_bytes() == (tmp_path / "b" / INPUTS).read_bytes()
    picks = {tuple(f["index"] for f in _write(tmp_path / f"s{seed}", num=2, seed=seed)["files"]) for seed in range(4)}
    assert len(picks) > 1  # the seed changes which of the scene's frames are drawn


@pytest.mark.parametrize("name", [INPUTS, LABELS])
def test_tampered_file_is_named(name, tmp_path):
    _write(tmp_path / "set")
    path = tmp_path / "set" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last value: shape and dtype still fine, only the hash notices
    path.write_bytes(bytes(data))
    with pytest.raises(CalibrationError, match=f"{name}: sha256 .* does not match manifest.json"):
        load_calibration_set(tmp_path / "set")


def test_missing_pieces_and_existing_output_are_clear_errors(tmp_path):
    with pytest.raises(CalibrationError, match="manifest.json: not found"):
        load_calibration_set(tmp_path)
    _write(tmp_path / "set", with_labels=False)
    assert load_calibration_set(tmp_path / "set")[1] is None
    with pytest.raises(CalibrationError, match="already exists; pass --force"):
        _write(tmp_path / "set")
    replaced = _write(tmp_path / "set", force=True, num=2)
    assert load_calibration_set(tmp_path / "set")[0].shape[0] == 2 == replaced["num"]
    (tmp_path / "set" / INPUTS).unlink()
    with pytest.raises(CalibrationError, match=f"{INPUTS}: missing"):
        load_calibration_set(tmp_path / "set")


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    import lix_deploy.runtime.preprocess as preprocess

    def broken(*args, **kwargs):
        raise RuntimeError("camera unplugged")

    monkeypatch.setattr(preprocess, "to_model_input", broken)
    with pytest.raises(RuntimeError, match="camera unplugged"):
        _write(tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--dataset", "synthetic", "--root", str(tiny_dataset_root()), "--split", "val", "--num", "2",
            "--height", "32", "--width", "64", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "2 frames of synthetic/val at 32x64" in capsys.readouterr().out
    assert json.loads((out / MANIFEST).read_text())["split"] == "val"
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(["--dataset", "vkitti2", "--num", "2", "--height", "32", "--width", "64",
                 "--out", str(tmp_path / "x")]) == 2
    assert "data.root is required" in capsys.readouterr().err
    assert main(["--num", "2", "--out", str(tmp_path / "y")]) == 2
    assert "--height and --width, or --onnx" in capsys.readouterr().err


def test_committed_default_set_is_intact():
    inputs, labels, manifest = load_calibration_set(ROOT / "calib" / "default")
    assert manifest["split"] == "train" and manifest["dataset"] == "synthetic"
    assert inputs.shape == (manifest["num"], 3, *manifest["input_size"]) and labels.shape[0] == manifest["num"]
    assert 0.0 <= inputs.min() and inputs.max() <= 255.0
    scenes = {f["source"].split("/")[0] for f in manifest["files"]}
    assert len(scenes) >= 10  # round-robin over the embedded set's 14 training scenes


def test_committed_default_set_matches_its_source_frames():
    from lix_train.data.embedded import EmbeddedConfig, default_cache_dir

    _, _, manifest = load_calibration_set(ROOT / "calib" / "default")
    root = default_cache_dir() / EmbeddedConfig().dirname()
    if manifest["root"] != f"embedded/{root.name}" or not root.is_dir():
        pytest.skip("the embedded dataset this set was made from is not in the cache")
    inputs, labels, _ = load_calibration_set(ROOT / "calib" / "default")
    for row in (0, len(manifest["files"]) - 1):
        entry = manifest["files"][row]
        assert sha256_file(root / entry["source"]) == entry["sha256"]
        rgb = cv2.cvtColor(cv2.imread(str(root / entry["source"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(inputs[row], to_model_input(rgb, "rgb8", tuple(manifest["input_size"]))[0])
