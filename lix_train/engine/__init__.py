"""Training and evaluation engine: the loop, checkpoints, metrics, inference, logs and plots.

    config.py      TrainConfig / EvalConfig (embedded as the `train` section of every tool's config)
    task.py        the Distiller protocol the trainer optimises; SupervisedTask for plain training
    trainer.py     Trainer(task, train_set, cfg, run_dir, signature=...).run() -> TrainSummary
    loader_scoring.py  score_loader(model_fn, loader, num_classes, mode) -> metrics dict
    inference.py   whole-image / sliding-window logits for (image) or (image, x) models
    metrics.py     confusion matrix, per-class IoU, mIoU, pixel accuracy
    checkpoint.py  atomic, signature-checked checkpoints
    plots.py       loss curves, per-class IoU bars, qualitative grids
    distributed.py, device.py, rng.py, optim.py, schedule.py, logging.py, batch.py: the plumbing

Submodules are imported explicitly (`from lix_train.engine.trainer import Trainer`) so that
importing the package stays cheap.
"""
