"""Checkpoints: full round trip, atomic writes under a crash, keep-last-k, and clear load errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from engine_fakes import TinyNet
from lix_train.engine import checkpoint as ckpt_io
from lix_train.engine.checkpoint import (
    CheckpointDir, CheckpointError, build_checkpoint, load_checkpoint, load_model_weights, model_signature,
    restore_checkpoint,
)
from lix_train.engine.optim import make_optimizer
from lix_train.engine.rng import capture_rng_state, restore_rng_state
from lix_train.engine.schedule import make_scheduler

SIG = model_signature("tiny", {"width": 8, "encoder": {"depth": 2}}, 3)


def _training_objects(seed: int):
    torch.manual_seed(seed)
    model, dwc = TinyNet(), nn.Conv2d(6, 1, 1)
    opt = make_optimizer(model.parameters(), dwc.parameters(), name="adamw", lr=0.01, weight_decay=0.01)
    sched = make_scheduler(opt, total_iters=10, power=0.9, warmup_iters=2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, dwc, opt, sched, scaler


def _train_steps(model, dwc, opt, sched, steps=3):
    for _ in range(steps):
        logits, _ = model(torch.rand(2, 3, 8, 8))
        loss = logits.square().mean() + dwc(torch.rand(1, 6, 4, 4)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()


def _save(directory, iteration, model, dwc, opt, sched, scaler, keep_last=0):
    ckpt = build_checkpoint(model=model, signature=SIG, iteration=iteration, extra_modules={"dwc": dwc},
                            optimizer=opt, scheduler=sched, scaler=scaler, rng=[capture_rng_state()],
                            config={"train": {"lr": 0.01}}, metrics={"best_miou": 0.5})
    return CheckpointDir(directory, keep_last).save(ckpt)


def test_round_trip_restores_every_state(tmp_path):
    model, dwc, opt, sched, scaler = _training_objects(0)
    _train_steps(model, dwc, opt, sched)
    path = _save(tmp_path, 3, model, dwc, opt, sched, scaler)

    model2, dwc2, opt2, sched2, scaler2 = _training_objects(1)
    ckpt = load_checkpoint(path)
    restore_checkpoint(ckpt, path, model=model2, signature=SIG, extra_modules={"dwc": dwc2}, optimizer=opt2,
                       scheduler=sched2, scaler=scaler2)
    for a, b in zip(list(model.state_dict().values()) + list(dwc.state_dict().values()),
                    list(model2.state_dict().values()) + list(dwc2.state_dict().values())):
        assert torch.equal(a, b)
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()
    assert ckpt["iteration"] == 3 and ckpt["config"] == {"train": {"lr": 0.01}} and ckpt["metrics"]["best_miou"] == 0.5
    # optimizer moments restored: one more identical step gives identical weights
    torch.manual_seed(5)
    _train_steps(model, dwc, opt, sched, 1)
    torch.manual_seed(5)
    _train_steps(model2, dwc2, opt2, sched2, 1)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_rng_states_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_crash_during_save_leaves_previous_latest_intact(tmp_path, monkeypatch):
    model, dwc, opt, sched, scaler = _training_objects(0)
    _save(tmp_path, 1, model, dwc, opt, sched, scaler)
    before = (tmp_path / "latest.pt").read_bytes()
    real_save = torch.save

    def crash_half_way(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crash_half_way)
    _train_steps(model, dwc, opt, sched)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, 2, model, dwc, opt, sched, scaler)
    monkeypatch.setattr(torch, "save", real_save)

    assert (tmp_path / "latest.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "latest.pt")["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind


def test_keep_last_k_prunes_older_iteration_files(tmp_path):
    model, dwc, opt, sched, scaler = _training_objects(0)
    for iteration in (2, 4, 6, 8):
        _save(tmp_path, iteration, model, dwc, opt, sched, scaler, keep_last=2)
    directory = CheckpointDir(tmp_path, 2)
    assert [p.name for p in directory.numbered()] == ["iter_0000006.pt", "iter_0000008.pt"]
    assert load_checkpoint(directory.numbered()[0])["iteration"] == 6
    assert load_checkpoint(directory.latest)["iteration"] == 8


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="not a readable LIX-Seg checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a LIX-Seg checkpoint"):
        load_checkpoint(foreign)


def test_architecture_and_class_count_mismatch_names_the_differences(tmp_path):
    model, dwc, opt, sched, scaler = _training_objects(0)
    path = _save(tmp_path, 1, model, dwc, opt, sched, scaler)
    other = model_signature("tiny", {"width": 16, "encoder": {"depth": 2}}, 5)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(path, TinyNet(), signature=other)
    message = str(err.value)
    assert "config.width: checkpoint 8, model 16" in message and "num_classes: checkpoint 3, model 5" in message
    assert "encoder" not in message and str(path) in message
    with pytest.raises(CheckpointError, match="model state does not fit"):
        load_model_weights(path, TinyNet(width=4))
    with pytest.raises(CheckpointError, match="extra modules differ"):
        restore_checkpoint(load_checkpoint(path), path, model=TinyNet(), extra_modules={})


def test_weights_only_load_for_evaluation(tmp_path):
    model, dwc, opt, sched, scaler = _training_objects(0)
    path = _save(tmp_path, 1, model, dwc, opt, sched, scaler)
    fresh = TinyNet()
    load_model_weights(path, fresh, signature=SIG)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert ckpt_io.signature_differences(SIG, SIG) == []
