"""Is an exported graph the network we trained? Checked on real frames before the artefact is kept.

`verify_onnx(path, reference, frames, tolerance)` runs, in order:
  1. onnx.checker and strict shape inference (a malformed graph fails here, not on the vehicle);
  2. the I/O convention of lix_deploy.artifact: input "image" float32 [N, 3, H, W], outputs as
     the metadata lists them, metadata readable;
  3. ONNX Runtime (CPU) against the PyTorch `reference` on the same frames: the largest logit
     error (relative to the logit scale), then the fraction of pixels whose labels agree, then
     the mIoU of ORT's labels scored against PyTorch's labels as ground truth.

The logits are compared even for a labels-only graph: a verification copy of the graph
exposes the tensor that feeds the in-graph ArgMax as an extra output. Frames come from the
embedded test split by default, preprocessed by the runtime's own `to_model_input`, so the
check sees what the deployed model will see. This module imports no torch: the reference is
any callable numpy batch -> numpy logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lix_deploy.artifact import INPUT_NAME, ArtifactError, ArtifactInfo

VERIFY_LOGITS = "lix_verify_logits"
_ELEM_TYPES = {"uint8": 2, "int32": 6, "float32": 1}  # onnx.TensorProto enum values


class VerificationError(RuntimeError):
    """The exported graph is malformed or disagrees with PyTorch beyond tolerance; carries the report."""

    def __init__(self, report: "VerificationReport"):
        self.report = report
        super().__init__("export verification failed: " + "; ".join(report.failures) + "\n" + report.summary())


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. Float32 exports of our students match PyTorch to about 1e-7 with identical argmax."""

    max_logit_error: float = 1e-4  # relative to max(1, max |logit|)
    min_agreement: float = 0.999
    min_miou: float = 0.99

    def __post_init__(self) -> None:
        if not self.max_logit_error > 0:
            raise ValueError(f"max_logit_error (--tolerance) must be positive, got {self.max_logit_error!r}")
        for name in ("min_agreement", "min_miou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


@dataclass
class VerificationReport:
    """What verification measured; `failures` lists every criterion missed (empty = passed)."""

    path: str
    frames: int = 0
    input_size: tuple[int, int] | None = None
    max_logit_error: float = math.nan
    logit_scale: float = math.nan
    relative_logit_error: float = math.nan
    label_agreement: float = math.nan
    miou: float = math.nan
    graph_argmax_consistent: bool = True
    tolerance: Tolerance = field(default_factory=Tolerance)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        t = self.tolerance
        return (f"verification {status} on {self.frames} frame(s) at {self.input_size}: "
                f"max logit error {self.max_logit_error:.3g} (relative {self.relative_logit_error:.3g}, "
                f"limit {t.max_logit_error:g}), label agreement {100 * self.label_agreement:.4f} % "
                f"(min {100 * t.min_agreement:g} %), mIoU(ORT vs PyTorch) {100 * self.miou:.4f} % "
                f"(min {100 * t.min_miou:g} %)")

    def as_dict(self) -> dict:
        return {"path": self.path, "frames": self.frames, "input_size": self.input_size,
                "max_logit_error": self.max_logit_error, "logit_scale": self.logit_scale,
                "relative_logit_error": self.relative_logit_error, "label_agreement": self.label_agreement,
                "miou": self.miou, "passed": self.passed, "failures": list(self.failures)}

    def raise_if_failed(self) -> None:
        if self.failures:
            raise VerificationError(self)


def label_miou(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Mean IoU of `predicted` scored against `reference`, over classes present in either (1.0 if identical)."""
    p = predicted.astype(np.int64).ravel()
    r = reference.astype(np.int64).ravel()
    confusion = np.bincount(r * num_classes + p, minlength=num_classes * num_classes)
    confusion = confusion[: num_classes * num_classes].reshape(num_classes, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 1.0


def _static_checks(path: Path, report: VerificationReport):
    """checker + strict shape inference + I/O convention; returns (model, info) or (None, None) on failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as err:  # checker / inference raise several types
        report.failures.append(f"ONNX checker / shape inference: {type(err).__name__}: {str(err)[:300]}")
        return None, None
    try:
        info = ArtifactInfo.from_props({p.key: p.value for p in model.metadata_props}, path)
    except ArtifactError as err:
        report.failures.append(f"metadata: {err.problem}")
        return None, None
    inputs = [i for i in model.graph.input]
    if [i.name for i in inputs] != [INPUT_NAME]:
        report.failures.append(f"graph inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    else:
        tensor = inputs[0].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        if tensor.elem_type != _ELEM_TYPES["float32"] or len(dims) != 4 or dims[1] != 3 or \
                tuple(dims[2:]) != tuple(info.input_size):
            report.failures.append(f"input {INPUT_NAME!r} is elem_type {tensor.elem_type} shape {dims}, expected "
                                   f"float32 [N, 3, {info.input_size[0]}, {info.input_size[1]}]")
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    if list(outputs) != info.outputs:
        report.failures.append(f"graph outputs {list(outputs)} differ from the metadata's {info.outputs}")
    elif outputs["labels"] != _ELEM_TYPES[info.label_dtype]:
        report.failures.append(f"labels output has elem_type {outputs['labels']}, metadata says {info.label_dtype}")
    return model, info


def _logits_tensor(model) -> str | None:
    """Name of the tensor the in-graph ArgMax reads (the logits), following Cast / Identity back from 'labels'."""
    producers = {out: node for node in model.graph.node for out in node.output}
    name = "labels"
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "ArgMax":
            return node.input[0]
        if node.op_type not in ("Cast", "Identity"):
            return None
        name = node.input[0]
    return None


def _session(model, logits_name: str | None):
    """ONNX Runtime CPU session of a copy of `model` that also outputs the logits tensor."""
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if logits_name is not None and logits_name not in {o.name for o in copy.graph.output}:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def verify_onnx(path: str | Path, reference: Callable[[np.ndarray], np.ndarray], frames: np.ndarray,
                tolerance: Tolerance | None = None) -> VerificationReport:
    """Check an exported graph (see the module docstring); returns the report, never raises for a mismatch.

    reference: PyTorch logits for a float32 [N, 3, H, W] 0..255 batch. frames: that kind of batch.
    Call `report.raise_if_failed()` to turn failures into a VerificationError.
    """
    path = Path(path)
    tolerance = tolerance or Tolerance()
    frames = np.ascontiguousarray(frames, np.float32)
    report = VerificationReport(str(path), frames=int(frames.shape[0]), tolerance=tolerance)
    model, info = _static_checks(path, report)
    if model is None:
        return report
    report.input_size = info.input_size
    if frames.ndim != 4 or frames.shape[1:] != (3, *info.input_size) or frames.shape[0] < 1:
        report.failures.append(f"verification frames have shape {frames.shape}, expected [N>=1, 3, "
                               f"{info.input_size[0]}, {info.input_size[1]}]")
        return report
    logits_name = "logits" if info.has_logits else _logits_tensor(model)
    if logits_name is None:
        report.failures.append("cannot find the ArgMax that produces 'labels' (is argmax in the graph?)")
        return report
    session = _session(model, logits_name)
    step = frames.shape[0] if info.dynamic_batch else 1
    ort_logits, ort_labels = [], []
    for start in range(0, frames.shape[0], step):
        labels, logits = session.run(["labels", logits_name], {INPUT_NAME: frames[start:start + step]})
        ort_labels.append(labels)
        ort_logits.append(logits)
    got_logits, got_labels = np.concatenate(ort_logits), np.concatenate(ort_labels)
    expected = np.asarray(reference(frames), np.float32)
    if got_logits.shape != expected.shape:
        report.failures.append(f"ORT logits have shape {got_logits.shape}, PyTorch {expected.shape}")
        return report
    expected_labels = expected.argmax(1)
    report.max_logit_error = float(np.abs(got_logits - expected).max())
    report.logit_scale = float(np.abs(expected).max())
    report.relative_logit_error = report.max_logit_error / max(1.0, report.logit_scale)
    report.label_agreement = float((got_labels.astype(np.int64) == expected_labels).mean())
    report.miou = label_miou(got_labels, expected_labels, expected.shape[1])
    report.graph_argmax_consistent = bool(np.array_equal(got_labels.astype(np.int64), got_logits.argmax(1)))

    if not report.relative_logit_error <= tolerance.max_logit_error:
        report.failures.append(f"max logit error {report.max_logit_error:.3g} (relative "
                               f"{report.relative_logit_error:.3g}) exceeds the tolerance {tolerance.max_logit_error:g}")
    if not report.label_agreement >= tolerance.min_agreement:
        report.failures.append(f"label agreement {100 * report.label_agreement:.3f} % is below "
                               f"{100 * tolerance.min_agreement:g} %")
    if not report.miou >= tolerance.min_miou:
        report.failures.append(f"mIoU of ORT labels vs PyTorch labels {100 * report.miou:.3f} % is below "
                               f"{100 * tolerance.min_miou:g} %")
    if not report.graph_argmax_consistent:
        report.failures.append("the graph's labels output differs from the argmax of its own logits")
    return report


def evenly_spaced(count: int, num: int) -> list[int]:
    """`num` indices spread over range(count) (all when num >= count)."""
    if num >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, num)})


def load_verification_frames(size: Sequence[int], num: int, root: str | Path | None = None,
                             split: str = "test") -> np.ndarray:
    """`num` real frames of a vKITTI2-format set's split, as the runtime preprocesses them: [N, 3, H, W].

    root: a set with splits.json (default: the embedded set, generated into the cache on first use).
    Frames are evenly spaced over the split, which is ordered by scene, so they span its scenes.
    """
    from lix_deploy.runtime.preprocess import to_model_input
    from lix_train.data.embedded import embedded_splits, ensure_embedded_dataset
    from lix_train.data.vkitti2 import VKITTI2Source

    root = Path(root) if root is not None else ensure_embedded_dataset(progress=False)
    source = VKITTI2Source(root, scenes=embedded_splits(root)[split])
    if len(source) == 0:
        raise ValueError(f"{root}: the {split} split has no frames to verify on")
    height, width = int(size[0]), int(size[1])
    batch = [to_model_input(source[i].rgb, "rgb8", (height, width)) for i in evenly_spaced(len(source), num)]
    return np.concatenate(batch)
