"""Shared helpers for the deployment tests: a tiny trained student checkpoint, its ONNX export, real frames.

    from deploy_fixtures import tiny_student_checkpoint, tiny_onnx, tiny_frames

The checkpoint is written exactly as the trainer writes one (build_checkpoint + atomic_torch_save,
signature from lix_train.experiment.network_signature, the resolved ExperimentConfig as config),
after a short supervised training on a tiny rendered synthetic set, so predictions are not
constant. Training happens once per process; later calls copy the cached weights.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

TINY_SIZE = (64, 128)  # model input (H, W): multiples of 32, small enough for 2 shared CPU cores
TINY_MODEL = {"encoder": "resnet18", "width": 0.25, "decoder_channels": 16}
TRAIN_STEPS = 40

_cache: dict[str, object] = {}


def _workdir() -> Path:
    if "dir" not in _cache:
        path = Path(tempfile.mkdtemp(prefix="lix-deploy-tests-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _cache["dir"] = path
    return _cache["dir"]  # type: ignore[return-value]


def tiny_dataset_root() -> Path:
    """A tiny rendered vKITTI2-format set (3 scenes x 4 frames, 64x128) with a splits.json; made once."""
    if "root" not in _cache:
        import json

        from lix_train.data.synthetic import SyntheticConfig, write_dataset

        root = _workdir() / "synthetic"
        config = SyntheticConfig(scenes=3, frames=4, height=TINY_SIZE[0], width=TINY_SIZE[1], seed=1)
        write_dataset(root, config, workers=1, progress=False)
        names = config.scene_names
        (root / "splits.json").write_text(json.dumps({"train": names[:1], "val": names[1:2], "test": names[2:]}))
        _cache["root"] = root
    return _cache["root"]  # type: ignore[return-value]


def tiny_frames(num: int = 4, size: tuple[int, int] = TINY_SIZE, split: str = "test") -> np.ndarray:
    """Real rendered frames, preprocessed by the runtime's to_model_input: float32 [N, 3, H, W] 0..255."""
    from lix_deploy.verify import load_verification_frames

    return load_verification_frames(size, num, root=tiny_dataset_root(), split=split)


def experiment_config(size: tuple[int, int] = TINY_SIZE, **model):
    """The resolved ExperimentConfig a tiny distillation run would store (quick-preset style)."""
    from lix_train.config import from_dict
    from lix_train.experiment import ExperimentConfig

    size_list = [int(size[0]), int(size[1])]
    return from_dict(ExperimentConfig, {
        "data": {"transforms": {"size": size_list, "crop_size": size_list}},
        "student": {"model": {**TINY_MODEL, **model}},
        "teacher": {"model": {**TINY_MODEL, **model}},
    })


def _train(student, steps: int) -> None:
    """A few dozen supervised steps on the tiny set's train frames, so predictions are not constant."""
    import torch
    import torch.nn.functional as F

    from lix_train.data.embedded import embedded_splits
    from lix_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from lix_train.data.vkitti2 import VKITTI2Source

    root = tiny_dataset_root()
    source = VKITTI2Source(root, scenes=embedded_splits(root)["train"])
    samples = [source[i] for i in range(len(source))]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    images = (torch.from_numpy(np.stack([s.rgb for s in samples])).permute(0, 3, 1, 2).float() - mean) / std
    labels = torch.from_numpy(np.stack([s.label for s in samples])).long()
    optimizer = torch.optim.Adam(student.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and immune to a busy shared CPU
    student.train()
    try:
        for _ in range(steps):
            logits, _ = student(images)
            loss = F.cross_entropy(logits, labels, ignore_index=255)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
        student.eval()


def tiny_student_checkpoint(tmp_path: str | Path, name: str = "student.pt", train_steps: int = TRAIN_STEPS,
                            size: tuple[int, int] = TINY_SIZE) -> Path:
    """A trainer-format student checkpoint (14 vKITTI2 classes, tiny ResNet-18) at tmp_path/name."""
    import torch

    from lix_train.config import to_dict
    from lix_train.engine.checkpoint import atomic_torch_save, build_checkpoint
    from lix_train.experiment import build_network, network_signature

    cfg = experiment_config(size)
    key = f"student-{train_steps}"
    student = build_network("student", cfg.student.model)
    if key not in _cache:
        torch.manual_seed(0)
        _train(student, train_steps)
        _cache[key] = {k: v.clone() for k, v in student.state_dict().items()}
    student.load_state_dict(_cache[key])  # type: ignore[arg-type]
    ckpt = build_checkpoint(model=student, signature=network_signature("student", cfg.student.model),
                            iteration=train_steps, config=to_dict(cfg), metrics={"losses": {}})
    return atomic_torch_save(ckpt, Path(tmp_path) / name)


def tiny_teacher_checkpoint(tmp_path: str | Path, name: str = "teacher.pt") -> Path:
    """An (untrained) trainer-format teacher checkpoint, for tests that must reject it."""
    from lix_train.config import to_dict
    from lix_train.engine.checkpoint import atomic_torch_save, build_checkpoint
    from lix_train.experiment import build_network, network_signature

    cfg = experiment_config()
    teacher = build_network("teacher", cfg.teacher.model)
    ckpt = build_checkpoint(model=teacher, signature=network_signature("teacher", cfg.teacher.model),
                            iteration=0, config=to_dict(cfg))
    return atomic_torch_save(ckpt, Path(tmp_path) / name)


def tiny_onnx(tmp_path: str | Path, name: str = "student.onnx", *, dynamic_batch: bool = False,
              with_logits: bool = False, label_dtype: str = "uint8", verify_frames: int = 2) -> Path:
    """A verified FP32 export of tiny_student_checkpoint (input [N, 3, 64, 128], metadata written)."""
    from lix_deploy.export import ExportOptions, export_student

    tmp_path = Path(tmp_path)
    checkpoint = tiny_student_checkpoint(tmp_path, name=Path(name).stem + ".pt")
    options = ExportOptions(*TINY_SIZE, dynamic_batch=dynamic_batch, with_logits=with_logits,
                            label_dtype=label_dtype)
    out = tmp_path / name
    export_student(checkpoint, out, options, frames=tiny_frames(verify_frames))
    return out
