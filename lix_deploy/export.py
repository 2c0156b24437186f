"""Export a trained student checkpoint to a verified, self-describing ONNX file.

    python -m lix_deploy.export --checkpoint RUN/student.pt --out student.onnx

The graph takes what a camera driver gives after the runtime's resize: float32 RGB 0..255
NCHW ("image"). The training normalisation (mean / std from the checkpoint's config) is folded
in as the first op and the argmax as the last, so the runtime copies H x W label bytes and can
never normalise twice or not at all. Class names, palette, input size, normalisation and the
source checkpoint's hash go into the file's metadata (lix_deploy.artifact).

The file is written to a temp name beside the target and verified there (checker, strict shape
inference, ONNX Runtime against PyTorch on real frames); only a verified graph is renamed onto
`--out`. A failed verification exits non-zero and leaves no artefact behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lix_deploy.artifact import INPUT_NAME, ArtifactInfo, atomic_output, sha256_file, write_metadata
from lix_deploy.cli import EXIT_OK, EXIT_REFUSED, ToolParser, UsageError, report, run_tool
from lix_deploy.verify import Tolerance, VerificationError, VerificationReport, load_verification_frames, verify_onnx
from lix_train.config import ConfigError
from lix_train.data.classes import ClassSet
from lix_train.data.errors import DatasetError
from lix_train.data.registry import CLASS_SETS, class_sets, dataset_spec
from lix_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lix_train.engine.checkpoint import CheckpointError, load_checkpoint, restore_checkpoint
from lix_train.models import SIZE_DIVISOR, ExportWrapper, create_model, export_dynamic_shapes

MIN_OPSET = 18
LABEL_DTYPES = ("uint8", "int32")
CLASS_SETS_BY_NAME = CLASS_SETS  # the registered datasets' class sets, by name (lix_train/data/registry.py)
MAX_BATCH = 64


class ExportError(ValueError):
    """A user-facing problem with the export's inputs (options, checkpoint, output location)."""


def class_set_named(name: str) -> ClassSet:
    """A registered dataset's class set by its name (vkitti2, cityscapes, nuimages, ...)."""
    return class_sets()[name]


def class_set_of_dataset(dataset: str) -> ClassSet:
    """The classes a training dataset (DataConfig.dataset) is labelled with: its DatasetSpec's."""
    return dataset_spec(dataset).class_set


def size_suggestion(value: int) -> str:
    """'96 or 128' for 100: the nearest multiples of SIZE_DIVISOR around a size."""
    low = max(SIZE_DIVISOR, value // SIZE_DIVISOR * SIZE_DIVISOR)
    high = -(-value // SIZE_DIVISOR) * SIZE_DIVISOR
    return str(low) if low == high else f"{low} or {high}"


@dataclass
class ExportOptions:
    """How the graph is built: static size, dynamic batch, outputs, label type, opset."""

    height: int
    width: int
    dynamic_batch: bool = False
    with_logits: bool = False
    label_dtype: str = "uint8"
    opset: int = MIN_OPSET

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < SIZE_DIVISOR or value % SIZE_DIVISOR:
                raise ExportError(f"--{name} {value} must be a positive multiple of {SIZE_DIVISOR} (the encoder's "
                                  f"output stride); try {size_suggestion(max(int(value), 1))}")
        if self.label_dtype not in LABEL_DTYPES:
            raise ExportError(f"--label-dtype {self.label_dtype!r} is not one of {', '.join(LABEL_DTYPES)}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"--opset {self.opset}: the dynamo exporter path needs opset >= {MIN_OPSET}")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def outputs(self) -> list[str]:
        return ["labels", "logits"] if self.with_logits else ["labels"]


@dataclass
class LoadedStudent:
    """A student network rebuilt from its checkpoint, with what the export needs to describe it."""

    model: nn.Module
    path: Path
    sha256: str
    signature: dict[str, Any]
    class_set: ClassSet
    dataset: str
    mean: tuple[float, ...]  # 3 values in 0..1 units, as the training transforms store them
    std: tuple[float, ...]
    trained_size: tuple[int, int] | None  # data.transforms.size of the run, if recorded


def _data_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    data = config.get("data") if isinstance(config, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def load_lix_checkpoint(path: str | Path) -> dict:
    """lix_train's load_checkpoint, with the project's own message for a file it cannot read.

    torch's message for such a file advises loading it with full unpickling, which runs
    arbitrary code from the file; it is never passed on (nor ever done here).
    """
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        if not err.problem.startswith("not a readable"):
            raise
        kind = err.problem.split("(", 1)[1].split(":", 1)[0] if "(" in err.problem else "unreadable"
        raise CheckpointError(path, f"not a LIX-Seg checkpoint ({kind}): checkpoints written by lix_train hold "
                                    "only tensors and plain containers and load without running code from the "
                                    "file; this one is not a torch file or holds other Python objects (a pickled "
                                    "model, another tool's checkpoint). Export a training run's student.pt "
                                    "(runs/NAME/student.pt from python -m lix_train.distill)") from None


def load_student(path: str | Path, classes: str | None = None) -> LoadedStudent:
    """Rebuild the student stored in a LIX checkpoint; CheckpointError / ExportError say what is wrong.

    `classes` (vkitti2, cityscapes, nuimages) overrides the class set, needed only when the
    checkpoint's config records no data.dataset.
    """
    path = Path(path)
    ckpt = load_lix_checkpoint(path)
    signature = ckpt.get("signature") or {}
    name = str(signature.get("name", ""))
    if name.startswith("teacher"):
        raise CheckpointError(path, "is a teacher checkpoint (RGB + X input); only the RGB student is deployed: "
                                    "export the distillation run's student.pt")
    if not name.startswith("student"):
        raise CheckpointError(path, f"signature names model {name!r}, not a student")
    try:
        model = create_model(name, **signature.get("config", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"cannot rebuild the network from its signature: {err}") from None
    restore_checkpoint(ckpt, path, model=model)
    model.eval()

    config = ckpt.get("config") or {}
    data = _data_section(config)
    dataset = str(data.get("dataset") or "")
    if classes is not None:
        class_set = class_set_named(classes)
    elif dataset:
        try:
            class_set = class_set_of_dataset(dataset)
        except ConfigError as err:
            raise ExportError(f"{path}: {err}: its class names are unknown; pass --classes "
                              f"{'|'.join(CLASS_SETS_BY_NAME)}") from None
    else:
        raise ExportError(f"{path}: the checkpoint's config records no data.dataset, so its class names are "
                          f"unknown; pass --classes {'|'.join(CLASS_SETS_BY_NAME)}")
    num_classes = int(signature.get("num_classes", getattr(model, "num_classes", 0)))
    if num_classes != class_set.num_classes:
        raise ExportError(f"{path}: the student predicts {num_classes} classes but the {class_set.name} class set "
                          f"has {class_set.num_classes}; pass the right --classes")
    transforms = data.get("transforms") if isinstance(data.get("transforms"), Mapping) else {}
    mean = tuple(float(v) for v in transforms.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in transforms.get("std", IMAGENET_STD))
    size = transforms.get("size")
    trained_size = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) == 2 else None
    return LoadedStudent(model, path, sha256_file(path), dict(signature), class_set, dataset or class_set.name,
                         mean, std, trained_size)


class DeployGraph(nn.Module):
    """image (float32 RGB 0..255, NCHW) -> labels [N, H, W] (and logits [N, C, H, W]).

    Normalisation uses the training transform's exact arithmetic, (rgb - 255 mean) * 1 / (255 std),
    so the exported student sees the values it was trained on.
    """

    def __init__(self, student: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 with_logits: bool = False, label_dtype: str = "uint8") -> None:
        super().__init__()
        mean255 = np.asarray(mean, np.float32) * np.float32(255.0)
        inv_std255 = np.float32(1.0) / (np.asarray(std, np.float32) * np.float32(255.0))
        self.register_buffer("mean", torch.from_numpy(mean255).reshape(1, 3, 1, 1))
        self.register_buffer("inv_std", torch.from_numpy(inv_std255).reshape(1, 3, 1, 1))
        self.with_logits = with_logits
        self.head = ExportWrapper(student, output="both" if with_logits else "labels", label_dtype=label_dtype)
        self.eval()

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) * self.inv_std

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The student's logits for a 0..255 image (the verification reference)."""
        return self.head.model(self.normalize(image))[0]

    def forward(self, image: torch.Tensor):
        out = self.head(self.normalize(image))
        if self.with_logits:
            logits, labels = out
            return labels, logits
        return out


def artifact_info(student: LoadedStudent, options: ExportOptions) -> ArtifactInfo:
    """The metadata written into the exported file."""
    return ArtifactInfo(
        class_names=list(student.class_set.names), palette=[list(c) for c in student.class_set.colors],
        input_size=options.size, mean=[m * 255.0 for m in student.mean], std=[s * 255.0 for s in student.std],
        outputs=options.outputs, precision="fp32", label_dtype=options.label_dtype,
        dynamic_batch=options.dynamic_batch, dataset=student.dataset, source_checkpoint=student.path.name,
        source_checkpoint_sha256=student.sha256, model_signature=student.signature, opset=options.opset,
        exporter=f"torch {torch.__version__} dynamo",
    )


def build_onnx(graph: DeployGraph, options: ExportOptions):
    """Trace `graph` with the dynamo exporter; returns the onnx.ModelProto (weights inline)."""
    example = torch.rand(1, 3, options.height, options.width, generator=torch.Generator().manual_seed(0)) * 255.0
    dynamic = export_dynamic_shapes(batch=True, size=False, max_batch=MAX_BATCH) if options.dynamic_batch else None
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # hides "torchvision is not installed" notes about ops we never use
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, (example,), None, dynamo=True, opset_version=options.opset, input_names=[INPUT_NAME],
                output_names=options.outputs, dynamic_shapes=dynamic, external_data=False, verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the user needs the gist and the opset
        raise ExportError(f"the dynamo ONNX exporter failed (opset {options.opset}): {type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}") from err
    finally:
        exporter_log.setLevel(level)
    return program.model_proto


def graph_opset(model) -> int:
    """The default-domain opset an ONNX model declares."""
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def torch_reference(graph: DeployGraph):
    """numpy [N, 3, H, W] 0..255 -> numpy logits, computed by PyTorch (the verification reference)."""

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph.logits(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()

    return run


def check_writable(out: Path) -> None:
    """Fail before any work when the artefact cannot be written where asked."""
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / 'student.onnx'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ExportError(f"--out {out}: cannot write into {out.parent} ({err.strerror or err})") from None


def export_student(
    checkpoint: str | Path | LoadedStudent,
    out: str | Path,
    options: ExportOptions,
    *,
    verify_frames: int = 8,
    verify_root: str | Path | None = None,
    verify_split: str = "test",
    tolerance: Tolerance | None = None,
    classes: str | None = None,
    frames: np.ndarray | None = None,
) -> VerificationReport:
    """Export, verify, and only then move the artefact into place; returns the verification report.

    `checkpoint` is a student checkpoint path or an already loaded student (load_student).
    `frames` ([N, 3, H, W] float32 0..255) replaces the frames read from `verify_root` / the
    embedded set. Raises ExportError / CheckpointError for bad inputs, VerificationError when
    the exported graph disagrees with PyTorch (nothing is written then).
    """
    out = Path(out)
    if verify_frames < 1 and frames is None:
        raise ExportError("--verify-frames must be >= 1: every export is verified")
    check_writable(out)
    student = checkpoint if isinstance(checkpoint, LoadedStudent) else load_student(checkpoint, classes)
    graph = DeployGraph(student.model, student.mean, student.std, options.with_logits, options.label_dtype)
    info = artifact_info(student, options)
    if frames is None:
        frames = load_verification_frames(options.size, verify_frames, root=verify_root, split=verify_split)
    proto = build_onnx(graph, options)
    produced = graph_opset(proto)
    if produced != options.opset:  # the exporter's version conversion can fail and keep its own opset
        raise ExportError(f"--opset {options.opset}: the exporter produced opset {produced} instead; choose an opset "
                          f"this torch / onnx pair can convert to (e.g. {MIN_OPSET})")
    write_metadata(proto, info)
    import onnx

    with atomic_output(out) as tmp:
        onnx.save_model(proto, str(tmp))
        report = verify_onnx(tmp, torch_reference(graph), frames, tolerance or Tolerance())
        report.raise_if_failed()
    return report


def build_parser() -> ToolParser:
    parser = ToolParser("export",
        "Export a LIX-Seg student checkpoint to ONNX (dynamo exporter): float32 RGB 0..255 NCHW in, "
        "mean/std normalisation folded in, argmax labels out, class names / palette / input size / source "
        "hash in the metadata. The export is verified against PyTorch on real frames before it is written; "
        f"a failed verification exits {EXIT_REFUSED} and writes nothing.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint (RUN/student.pt)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write (e.g. student.onnx)")
    parser.add_argument("--height", type=int, default=None,
                        help="model input height, a multiple of 32; default: the run's data.transforms.size")
    parser.add_argument("--width", type=int, default=None,
                        help="model input width, a multiple of 32; default: the run's data.transforms.size")
    parser.add_argument("--dynamic-batch", action="store_true", help=f"make the batch dimension dynamic (1..{MAX_BATCH})")
    parser.add_argument("--with-logits", action="store_true", help="also output float32 logits [N, C, H, W]")
    parser.add_argument("--label-dtype", choices=LABEL_DTYPES, default="uint8", help="type of the labels output")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--classes", choices=CLASS_SETS_BY_NAME, default=None,
                        help="class set for names / palette; default: from the checkpoint's data.dataset")
    group = parser.add_argument_group("verification (always run)")
    group.add_argument("--verify-frames", type=int, default=8, help="real frames ONNX Runtime is compared on")
    group.add_argument("--verify-root", type=Path, default=None,
                       help="vKITTI2-format root with splits.json to take frames from; default: the embedded set")
    group.add_argument("--verify-split", choices=("train", "val", "test"), default="test",
                       help="split of --verify-root the frames come from")
    defaults = Tolerance()
    group.add_argument("--tolerance", type=float, default=defaults.max_logit_error,
                       help="largest allowed |logit(ORT) - logit(PyTorch)|, relative to max(1, max |logit|)")
    group.add_argument("--min-agreement", type=float, default=defaults.min_agreement,
                       help="smallest allowed fraction of pixels whose labels agree")
    group.add_argument("--min-miou", type=float, default=defaults.min_miou,
                       help="smallest allowed mIoU of the ORT labels scored against the PyTorch labels")
    return parser


def _model_size(args: argparse.Namespace, student: LoadedStudent) -> tuple[int, int]:
    """--height / --width, each defaulting to the training size recorded in the checkpoint."""
    if (args.height is None or args.width is None) and student.trained_size is None:
        raise ExportError(f"{student.path}: the checkpoint records no data.transforms.size; give --height and "
                          "--width (multiples of 32)")
    trained = student.trained_size or (0, 0)
    return (args.height if args.height is not None else trained[0],
            args.width if args.width is not None else trained[1])


def run(args: argparse.Namespace) -> int:
    try:
        tolerance = Tolerance(args.tolerance, args.min_agreement, args.min_miou)
    except ValueError as err:  # Tolerance validates the three options, naming the one out of range
        raise UsageError(str(err)) from None
    if args.verify_frames < 1:
        raise ExportError("--verify-frames must be >= 1: every export is verified")
    check_writable(args.out)
    student = load_student(args.checkpoint, args.classes)
    height, width = _model_size(args, student)
    options = ExportOptions(height, width, args.dynamic_batch, args.with_logits, args.label_dtype, args.opset)
    try:
        verification = export_student(student, args.out, options, verify_frames=args.verify_frames,
                                      verify_root=args.verify_root, verify_split=args.verify_split,
                                      tolerance=tolerance)
    except VerificationError as err:
        report("export", f"refused: {err}")
        report("export", f"nothing was written to {args.out}")
        return EXIT_REFUSED
    print(verification.summary())
    info = json.dumps({"out": str(args.out), "input_size": [height, width], "outputs": options.outputs,
                       "label_dtype": options.label_dtype, "dynamic_batch": options.dynamic_batch})
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB) {info}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_tool(build_parser(), argv, run, bad_input=(ExportError, CheckpointError, ConfigError, DatasetError))


if __name__ == "__main__":
    raise SystemExit(main())
