"""Lock files do not outlive their holder, and removing them never lets two holders in at once."""

from __future__ import annotations

import threading
import time

import pytest

from cli_fixtures import tiny_config, write_config, write_tiny_synthetic
from lix_train.locking import Busy, exclusive, sole_user


def test_a_released_lock_leaves_no_file_and_prunes_an_empty_folder(tmp_path):
    lock = tmp_path / "store" / "abc123" / ".lock"
    with exclusive(lock, prune_parent=True):
        assert lock.is_file()
    assert not lock.exists() and not lock.parent.exists() and (tmp_path / "store").is_dir()
    with exclusive(lock, prune_parent=True):
        (lock.parent / "teacher.pt").write_bytes(b"x")
    assert not lock.exists() and (lock.parent / "teacher.pt").is_file()  # a folder with results stays
    run_lock = tmp_path / "runs" / ".demo.lock"
    with sole_user(run_lock, "run folder demo"):
        with pytest.raises(Busy, match="run folder demo is in use"):
            with sole_user(run_lock, "run folder demo"):
                pass
    assert not run_lock.exists()


def test_removing_the_lock_file_keeps_mutual_exclusion(tmp_path):
    """Waiters woken on a deleted lock file start again on the new one: never two holders at once."""
    lock = tmp_path / "t" / ".lock"
    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def worker():
        try:
            for _ in range(15):
                with exclusive(lock, prune_parent=True):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.002)
                    with guard:
                        inside[0] -= 1
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and most[0] == 1
    assert not lock.exists()


def test_a_failed_distill_run_leaves_no_lock_files(tmp_path, capsys):
    """The teacher fails before writing anything (fewer frames than a batch): no `.lock`-only store folder,
    no run-folder lock."""
    from lix_train import distill

    root = write_tiny_synthetic(tmp_path / "synth")
    cfg = tiny_config(root, tmp_path)
    cfg["teacher"]["train"]["batch_size"] = 64
    config = write_config(tmp_path / "tiny.yaml", cfg)
    assert distill.main(["--config", str(config), "--run-dir", str(tmp_path / "runs" / "demo")]) == 2
    assert "teacher.train" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/*.lock")) and not list(tmp_path.glob("**/.lock"))
    teachers = tmp_path / "teachers"
    assert not teachers.exists() or [p for p in teachers.iterdir()] == []


def test_a_file_in_place_of_the_lock_folder_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "t").write_text("not a folder")
    with pytest.raises(FileExistsError):
        with exclusive(tmp_path / "t" / ".lock"):
            pass
