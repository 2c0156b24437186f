"""A damaged frame in any split stops a run before training, in one line naming the file, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from cli_fixtures import tiny_config, write_config
from lix_train import distill, train_teacher
from lix_train.data.errors import DatasetError
from lix_train.data.precheck import check_frame_files
from lix_train.data.vkitti2 import VKITTI2Source


@pytest.fixture
def damaged(tiny_synthetic, tmp_path):
    """A copy of the tiny set and the files of its frame `index` of scene `scene`."""
    root = tmp_path / "synth"
    shutil.copytree(tiny_synthetic, root)

    def files(scene: str, index: int = 1):
        return VKITTI2Source(root, scenes=[scene]).frame_files(index)

    return root, files


def _one_line(capsys) -> str:
    """The error line, last on stderr (after at most progress messages) and alone: no traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and errors == err.splitlines()[-1:], err
    return errors[0]


def _stain_label(files) -> Path:
    """Give Scene01 frame 1's label a colour no class has (found only when the frame is decoded)."""
    label = files("Scene01")[1]
    image = cv2.imread(str(label))
    image[0, 0] = (1, 2, 3)
    cv2.imwrite(str(label), image)
    return label


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 9 // 10])


def test_header_check_finds_truncated_and_mis_sized_files(damaged):
    root, files = damaged
    rgb, label, depth, *_ = files("Scene01", 0)
    check_frame_files(files("Scene01", 0))
    _truncate(rgb)
    with pytest.raises(DatasetError, match=r"rgb_00000.jpg: truncated JPEG"):
        check_frame_files(files("Scene01", 0))
    rgb, label, depth, *_ = files("Scene01", 1)
    cv2.imwrite(str(depth), cv2.imread(str(depth), cv2.IMREAD_UNCHANGED)[:40])
    with pytest.raises(DatasetError, match=r"depth_00001.png: image is 240x40 \(WxH\) but rgb_00001.jpg is 240x80"):
        check_frame_files(files("Scene01", 1))
    _truncate(label)
    with pytest.raises(DatasetError, match="classgt_00001.png: truncated PNG"):
        check_frame_files([label])


@pytest.mark.parametrize("tool", ["distill", "train_teacher"])
def test_truncated_test_jpg_stops_the_run_before_training(damaged, tmp_path, capsys, tool):
    root, files = damaged
    bad = files("Scene03")[0]  # the test split's drive
    _truncate(bad)
    config = write_config(tmp_path / "tiny.yaml", tiny_config(root, tmp_path))
    main = {"distill": distill.main, "train_teacher": train_teacher.main}[tool]
    assert main(["--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert str(bad) in line and "truncated JPEG" in line
    assert not list(tmp_path.glob("**/latest.pt")) and not list(tmp_path.glob("**/*.pt"))  # nothing trained


def test_error_in_a_loader_worker_is_one_line(damaged, tmp_path, capsys):
    """An unknown label colour (found only by decoding) in a DataLoader worker: one line, exit 2."""
    root, files = damaged
    label = _stain_label(files)
    cfg = tiny_config(root, tmp_path, iters=2)
    cfg["teacher"]["train"]["num_workers"] = 1
    config = write_config(tmp_path / "tiny.yaml", cfg)
    assert train_teacher.main(["--config", str(config), "--run-dir", str(tmp_path / "t")]) == 2
    line = _one_line(capsys)
    assert str(label) in line and "colour(s) not in" in line and "DataLoader" not in line


def test_skip_drops_bad_frames_and_names_them(damaged, tmp_path):
    """data.on_error skip: a truncated frame is left out (not replaced by a duplicate) and named."""
    from lix_train.config import from_dict
    from lix_train.data.build import build_datasets
    from lix_train.data.config import DataConfig

    root, files = damaged
    bad = files("Scene01")[0]
    _truncate(bad)
    cfg = from_dict(DataConfig, {**tiny_config(root, tmp_path)["data"], "on_error": "skip"})
    train = build_datasets(cfg, None, ("train",))["train"]
    assert len(train) == 2 and "Scene01/clone/Camera_0/00001" not in train.source.names
    assert [train[i]["name"] for i in range(2)] == ["Scene01/clone/Camera_0/00000", "Scene01/clone/Camera_0/00002"]
    assert list(train.skipped_frames) == ["Scene01/clone/Camera_0/00001"]
    assert "truncated JPEG" in train.skipped_frames["Scene01/clone/Camera_0/00001"]


def test_skipped_frames_are_counted_in_metrics_json(damaged, tmp_path, capsys):
    import json

    root, files = damaged
    _truncate(files("Scene01")[0])
    _truncate(files("Scene03")[2])
    cfg = tiny_config(root, tmp_path, iters=1)
    cfg["data"]["on_error"] = "skip"
    cfg["output"]["plots"] = False
    config = write_config(tmp_path / "tiny.yaml", cfg)
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_frames"]
    assert {s: r["count"] for s, r in skipped.items()} == {"train": 1, "val": 0, "test": 1}
    assert list(skipped["test"]["frames"]) == ["Scene03/clone/Camera_0/00001"]  # its depth PNG is truncated
    assert "skipped 2 unreadable frame(s)" in capsys.readouterr().err


def test_frames_skipped_inside_a_loader_worker_reach_metrics_json(damaged, tmp_path):
    """An unknown label colour passes the header check; with skip it is skipped in a worker and still named."""
    import json

    root, files = damaged
    _stain_label(files)
    cfg = tiny_config(root, tmp_path, iters=3)
    cfg["data"]["on_error"] = "skip"
    cfg["output"]["plots"] = False
    for role in ("teacher", "student"):
        cfg[role]["train"]["num_workers"] = 1
    config = write_config(tmp_path / "tiny.yaml", cfg)
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_frames"]
    assert list(skipped["train"]["frames"]) == ["Scene01/clone/Camera_0/00001"]
    assert "colour(s) not in" in skipped["train"]["frames"]["Scene01/clone/Camera_0/00001"]


def test_skip_records_travel_through_a_collated_batch():
    from torch.utils.data import default_collate

    from lix_train.data.skipping import SKIPPED_KEY, decode_skips, encode_skips, note_worker_skips

    items = [{"x": 1, SKIPPED_KEY: encode_skips({"a/1": "bad\ncolour"})}, {"x": 2, SKIPPED_KEY: ""}]
    batch = default_collate(items)
    seen = {}

    class Dataset:
        def note_skipped(self, frames):
            seen.update(frames)

    note_worker_skips(Dataset(), batch)
    assert seen == {"a/1": "bad colour"} and SKIPPED_KEY not in batch
    assert decode_skips("") == {} and decode_skips(None) == {}
