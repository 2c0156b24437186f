"""What the benchmark can time: PyTorch eager student and teacher, and artefacts through the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lix_deploy import accuracy

Loader = Callable[[], tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]]


@dataclass
class Target:
    """One thing to benchmark: a name, how to load it, and whether its labels are comparable."""

    name: str
    backend: str
    precision: str
    artefact: str
    load: Loader
    comparable: bool = True


def _torch_device(requested: str):
    import torch

    # Subnormal floats can cost 10-100x on x86 CPUs; the ONNX Runtime sessions flush them too,
    # so both sides are timed under the same rule.
    torch.set_flush_denormal(True)

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pytorch_student_target(checkpoint: Path, device: str, threads: int | None) -> Target:
    def load():
        import torch

        from lix_deploy.export import DeployGraph, load_student

        if threads:
            torch.set_num_threads(threads)
        student = load_student(checkpoint)
        dev = _torch_device(device)
        graph = DeployGraph(student.model, student.mean, student.std).to(dev).eval()

        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                labels = graph(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(dev))
            return labels.cpu().numpy()

        return predict, (lambda: None)

    return Target("pytorch fp32 (eager)", "pytorch", "fp32", str(checkpoint), load)


def pytorch_teacher_target(checkpoint: Path, device: str, threads: int | None) -> Target:
    """The RGB + X teacher, X = zeros: its cost is what distillation saves, its labels are not compared."""

    def load():
        import torch

        from lix_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from lix_deploy.export import load_lix_checkpoint
        from lix_train.engine.checkpoint import restore_checkpoint
        from lix_train.models import create_model

        if threads:
            torch.set_num_threads(threads)
        ckpt = load_lix_checkpoint(checkpoint)
        signature = ckpt.get("signature") or {}
        if not str(signature.get("name", "")).startswith("teacher"):
            raise ValueError(f"{checkpoint}: --teacher-checkpoint must hold a teacher, found {signature.get('name')!r}")
        model = create_model(signature["name"], **signature.get("config", {}))
        restore_checkpoint(ckpt, checkpoint, model=model)
        dev = _torch_device(device)
        model = model.to(dev).eval()
        transforms = ((ckpt.get("config") or {}).get("data") or {}).get("transforms") or {}
        mean = torch.tensor(transforms.get("mean", IMAGENET_MEAN), device=dev).view(1, 3, 1, 1) * 255
        std = torch.tensor(transforms.get("std", IMAGENET_STD), device=dev).view(1, 3, 1, 1) * 255
        x_channels = int(signature.get("config", {}).get("x_channels", 3))

        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                image = (torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(dev) - mean) / std
                x = torch.zeros(image.shape[0], x_channels, *image.shape[2:], device=dev)
                logits, _ = model(image, x)
            return logits.argmax(1).to(torch.uint8).cpu().numpy()

        return predict, (lambda: None)

    return Target("teacher rgb+x (eager, X=0)", "pytorch", "fp32", str(checkpoint), load, comparable=False)


def artefact_target(path: Path, threads: int | None, label: str | None = None) -> Target:
    from lix_deploy.artifact import read_metadata
    from lix_deploy.runtime.segmenter import backend_for_artifact

    backend = backend_for_artifact(path)
    precision = read_metadata(path).precision
    options = {"intra_op_threads": threads} if backend == "onnxruntime" and threads else {}
    name = label or f"{backend} {precision} ({path.name})"
    return Target(name, backend, precision, str(path), lambda: accuracy.artefact_predictor(path, backend, **options))


def torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_version() -> dict[str, str]:
    try:
        import torch

        return {"torch": torch.__version__}
    except ImportError:
        return {}
