"""The training loop: summary, what it trains and freezes, NaN stop, schedule, optimizer groups, config."""

from __future__ import annotations

import logging

import pytest
import torch

from engine_fakes import NUM_CLASSES, SIG, FakeDistiller, SyntheticSegmentation, TinyNet, train_config
from lix_train.config import ConfigError, from_dict
from lix_train.engine.checkpoint import CheckpointError, load_checkpoint, model_signature
from lix_train.engine.config import TrainConfig
from lix_train.engine.device import make_runtime, select_device
from lix_train.engine.logging import read_csv
from lix_train.engine.optim import make_optimizer
from lix_train.engine.schedule import make_scheduler, poly_warmup_factor
from lix_train.engine.task import SupervisedTask
from lix_train.engine.trainer import NonFiniteLossError, Trainer

def test_run_trains_the_student_and_dwc_not_the_teacher(tmp_path):
    torch.manual_seed(0)
    task = FakeDistiller()
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    student_before = task.student.head.weight.clone()
    dwc_before = task.dwc.weight.clone()
    trainer = Trainer(task, SyntheticSegmentation(), train_config(), tmp_path, signature=SIG,
                      eval_set=SyntheticSegmentation(5, seed=1), class_names=["a", "b", "c"])
    summary = trainer.run()

    assert (summary.start_iteration, summary.iterations, summary.iterations_run) == (0, 12, 12)
    assert summary.wall_time_s > 0 and set(summary.final_losses) == {"loss_h", "loss_l", "loss"}
    assert summary.last_eval["num_pixels"] == 5 * 16 * 14 and set(summary.last_eval["per_class_iou"]) == {"a", "b", "c"}
    assert all(torch.equal(v, teacher_before[k]) for k, v in task.teacher.state_dict().items())
    assert not any(p.requires_grad for p in task.teacher.parameters())
    assert not torch.equal(task.student.head.weight, student_before)
    assert not torch.equal(task.dwc.weight, dwc_before)

    rows = read_csv(tmp_path / "train.csv")
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert {"lr", "loss_h", "loss_l", "loss", "img_s"} <= set(rows[0])
    assert float(rows[-1]["loss_h"]) < float(rows[0]["loss_h"])  # it learns the synthetic labels
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "eval.csv")] == [6, 12]

    ckpt = load_checkpoint(summary.checkpoint)
    assert ckpt["iteration"] == 12 and set(ckpt["extra"]) == {"dwc"}
    assert set(ckpt["model"]) == set(task.student.state_dict())  # the product is the student alone
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_supervised_teacher_training_feeds_x(tmp_path):
    torch.manual_seed(0)
    task = SupervisedTask(TinyNet(4), input_keys=("image", "x"))
    summary = Trainer(task, SyntheticSegmentation(), train_config(iters=4, eval_every=0), tmp_path, signature=SIG,
                      eval_set=SyntheticSegmentation(3, seed=2)).run()
    assert summary.iterations == 4 and set(summary.final_losses) == {"loss_h", "loss"}
    assert 0.0 <= summary.last_eval["miou"] <= 1.0


def test_nan_loss_stops_with_iteration_and_term_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(FakeDistiller(nan_at=7), SyntheticSegmentation(), train_config(eval_every=0), tmp_path,
                      signature=SIG)
    with pytest.raises(NonFiniteLossError, match=r"'loss_l' is nan at iteration 7") as err:
        trainer.run()
    assert err.value.iteration == 7 and err.value.term == "loss_l"
    assert "latest.pt was left untouched" in str(err.value)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["iteration"] == 4


def test_explicit_resume_and_signature_check(tmp_path):
    torch.manual_seed(0)
    Trainer(FakeDistiller(), SyntheticSegmentation(), train_config(iters=4, eval_every=0), tmp_path / "a",
            signature=SIG).run()
    latest = tmp_path / "a" / "checkpoints" / "latest.pt"
    summary = Trainer(FakeDistiller(), SyntheticSegmentation(), train_config(iters=6, eval_every=0), tmp_path / "b",
                      signature=SIG, resume=latest).run()
    assert (summary.start_iteration, summary.iterations_run, summary.resumed_from) == (4, 2, latest)
    wrong = model_signature("tiny", {"width": 8}, NUM_CLASSES + 1)
    with pytest.raises(CheckpointError, match="num_classes: checkpoint 3, model 4"):
        Trainer(FakeDistiller(), SyntheticSegmentation(), train_config(iters=6), tmp_path / "c", signature=wrong,
                resume=latest).run()
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(FakeDistiller(), SyntheticSegmentation(), train_config(), tmp_path / "d", signature=SIG,
                resume=tmp_path / "missing.pt")


def test_amp_is_disabled_on_cpu_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="lix_train.engine.device"):
        runtime = make_runtime(torch.device("cpu"), amp=True, amp_dtype="float16", channels_last=True)
    assert "AMP disabled" in caplog.text
    assert not runtime.amp and not runtime.channels_last and not runtime.grad_scaler().is_enabled()
    with runtime.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_cuda_request_without_gpu_is_a_clear_error():
    assert select_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        select_device("cuda")


def test_poly_warmup_schedule():
    total, warmup, power = 100, 10, 0.9
    assert poly_warmup_factor(0, total, power, warmup) == pytest.approx(0.1 * 1.0)
    assert poly_warmup_factor(4, total, power, warmup) == pytest.approx(0.5 * (1 - 0.04) ** power)
    assert poly_warmup_factor(50, total, power, warmup) == pytest.approx(0.5 ** power)
    assert poly_warmup_factor(total, total, power, warmup) == 0.0
    after = [poly_warmup_factor(i, total, power, warmup) for i in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(after, after[1:]))
    assert poly_warmup_factor(7, total, 1.0, 0) == pytest.approx(0.93)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = make_scheduler(opt, total, power, warmup)
    for i in range(30):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * poly_warmup_factor(i, total, power, warmup))
        opt.step()
        sched.step()


def test_no_weight_decay_on_norms_and_biases():
    net, dwc = TinyNet(), torch.nn.Conv2d(6, 1, 1)
    learnable = list(net.parameters()) + list(dwc.parameters())  # as Distiller.get_learnable_parameters()
    opt = make_optimizer(learnable, dwc.parameters(), name="sgd", lr=0.1, weight_decay=0.01)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"model", "model_no_decay", "extra", "extra_no_decay"}
    assert all(p.ndim > 1 for p in groups["model"]["params"]) and groups["model"]["weight_decay"] == 0.01
    assert groups["model_no_decay"]["weight_decay"] == 0.0
    ids = {id(p) for p in groups["model_no_decay"]["params"]}
    assert {id(net.body[1].weight), id(net.body[1].bias), id(net.head.bias)} <= ids
    extra_ids = {id(p) for p in groups["extra"]["params"] + groups["extra_no_decay"]["params"]}
    assert extra_ids == {id(p) for p in dwc.parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(learnable)  # each parameter exactly once


@pytest.mark.parametrize("data, message", [
    ({"iters": 0}, "train.iters=0"),
    ({"lr": 0}, "train.lr=0.0 must be positive"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not one of"),
    ({"warmup_iters": 50, "iters": 10}, "train.warmup_iters=50"),
    ({"momentum": 1.5}, "train.momentum=1.5"),
    ({"betas": [0.9]}, "train.betas"),
    ({"device": "tpu"}, "device='tpu' is not one of"),
    ({"eval": {"crop_size": [100, 100], "stride": [50, 50]}}, "multiples of eval.size_divisor"),
    ({"eval": {"stride": [512, 512]}}, "must not exceed eval.crop_size"),
])
def test_train_config_validation_names_the_parameter(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        from_dict(TrainConfig, data)
    assert from_dict(TrainConfig, {"iters": 10, "warmup_iters": 5, "eval": {"mode": "slide"}}).eval.mode == "slide"


def test_loader_workers_are_sized_to_the_machine(monkeypatch):
    """A preset's 8 workers on a 2-core machine become 1 (one core computes), never more than asked."""
    from lix_train.engine import device

    monkeypatch.setattr(device, "available_cpus", lambda: 2)
    assert [device.loader_workers(n) for n in (0, 1, 8)] == [0, 1, 1]
    monkeypatch.setattr(device, "available_cpus", lambda: 16)
    assert device.loader_workers(8) == 8 and device.loader_workers(8, processes=4) == 3
