"""ONNX Runtime artefacts: FP32 optimised, INT8 Q/DQ (static, calibrated), FP16 converted.

INT8 is explicit quantisation: `quantize_static` inserts QuantizeLinear/DequantizeLinear pairs
(QuantFormat.QDQ) with scales measured on the calibration frames. Weights are per-channel,
signed and symmetric. Activations come in two flavours (`activations`):
  * "int8": signed and symmetric (zero point 0), the only INT8 TensorRT accepts, so the file
    serves TensorRT on a GPU (and ONNX Runtime, slowly: x86 has no fast s8 x s8 convolution);
  * "uint8": unsigned and asymmetric, the u8 x s8 path x86 CPUs (VNNI / AVX2) run fastest:
    measured 2.8x faster than FP32 on a full-width student at 384x1248 on this project's
    2-core CI machine, where "int8" was only 1.2x. The ONNX Runtime CPU build uses it.

Default exclusions (kept in float), found by walking the graph rather than by node names,
which the exporter may change:
  * the first convolution: walk forward (breadth first) from the graph inputs through
    consumers; the first Conv reached sees raw pixels whose range a shared INT8 scale fits badly;
  * the classifier: walk backward (breadth first) from the graph outputs through producers
    (across ArgMax / Cast / Resize); the first Conv reached produces the logits, whose small
    margins decide every label.

Always kept in float, whatever --exclude-nodes says (`float_tail`): every ArgMax and the ops
between it and the classifier (the final Resize, Casts, Transposes ...). Otherwise the
quantiser puts a QuantizeLinear -> DequantizeLinear pair on the full-resolution logits right
before the ArgMax: a tie-breaking 8-bit rounding of the class margins at every pixel, for no
speed (ArgMax and a bilinear Resize are memory-bound either way).

FP32 is the graph ONNX Runtime writes after its ORT_ENABLE_EXTENDED optimisations (constant
folding, Conv+activation fusion): still exact, but not the ENABLE_ALL level, which bakes in
hardware-specific memory layouts (NCHWc) that only load on a CPU like the one that wrote it.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lix_deploy.artifact import atomic_output

from .candidate import CandidateRequest
from .report import BuildReport, Stopwatch

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
INT8_ACTIVATIONS = ("uint8", "int8")


class BuildError(RuntimeError):
    """A build that cannot proceed because of its inputs or environment; the message says what to change."""


class BuildFailure(BuildError):
    """The toolchain ran and failed (parser errors, no engine, requested precision not applied)."""


def _onnx():
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is a core [deploy] dependency
        raise BuildError("the onnx package is missing; install lix-seg[deploy]") from err
    return onnx


# --------------------------------------------------------------------------- graph inspection


def ensure_node_names(model) -> int:
    """Give every unnamed node a unique name (`<op>_<index>`), so exclusions can refer to it; returns count."""
    used = {node.name for node in model.graph.node if node.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
            named += 1
    return named


def _first_op_from(starts: Iterable[str], edges: dict[str, list], op_type: str, next_tensors) -> str | None:
    """Breadth-first over tensors; the first node of `op_type` reached, by depth then graph order."""
    queue = collections.deque(starts)
    seen_tensors = set(queue)
    seen_nodes = set()
    while queue:
        tensor = queue.popleft()
        for node in edges.get(tensor, []):
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            if node.op_type == op_type:
                return node.name
            for nxt in next_tensors(node):
                if nxt and nxt not in seen_tensors:
                    seen_tensors.add(nxt)
                    queue.append(nxt)
    return None


def default_exclusions(model) -> list[str]:
    """Names of the first Conv (from the inputs) and the classifier Conv (from the outputs); see module doc."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    consumers: dict[str, list] = collections.defaultdict(list)
    producers: dict[str, list] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producers[name].append(node)
    first = _first_op_from(inputs, consumers, "Conv", lambda node: node.output)
    last = _first_op_from([o.name for o in model.graph.output], producers, "Conv",
                          lambda node: [i for i in node.input if i not in initializers])
    return [name for name in dict.fromkeys([first, last]) if name]


#: ops that may sit between the classifier Conv and an ArgMax (walked across by float_tail)
TAIL_OPS = frozenset({"Resize", "Upsample", "Cast", "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                      "Softmax", "Slice", "Pad", "Flatten"})


def float_tail(model) -> list[str]:
    """Names of every ArgMax and of the TAIL_OPS nodes feeding it (back to the classifier): kept in float."""
    initializers = {init.name for init in model.graph.initializer}
    producers = {name: node for node in model.graph.node for name in node.output}
    names: list[str] = []
    stack = [node for node in model.graph.node if node.op_type == "ArgMax"]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names.append(node.name)
        for tensor in node.input:
            parent = producers.get(tensor)
            if tensor and tensor not in initializers and parent is not None and parent.op_type in TAIL_OPS:
                stack.append(parent)
    order = {node.name: index for index, node in enumerate(model.graph.node)}
    return sorted(dict.fromkeys(names), key=order.__getitem__)


def argmax_reads_dequantized(model) -> list[str]:
    """ArgMax nodes whose input is a DequantizeLinear output (what float_tail prevents); [] when none."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in model.graph.node
            if node.op_type == "ArgMax" and any(i in dequantized for i in node.input)]


def check_node_names(model, names: Sequence[str]) -> None:
    """BuildError naming every entry of `names` that is not a node of `model` (with a few valid ones)."""
    valid = {node.name for node in model.graph.node}
    unknown = [name for name in names if name not in valid]
    if unknown:
        convs = [node.name for node in model.graph.node if node.op_type == "Conv"][:6]
        raise BuildError(f"--exclude-nodes: no node named {', '.join(map(repr, unknown))} in the ONNX graph; "
                         f"Conv nodes are e.g. {', '.join(convs)}")


def exclusions(model, nodes_to_exclude: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(nodes kept in float as asked - default_exclusions when None, else the checked names - and
    the float tail from the classifier to ArgMax, which every INT8 path keeps in float)."""
    if nodes_to_exclude is None:
        excluded = default_exclusions(model)
    else:
        excluded = list(nodes_to_exclude)
        check_node_names(model, excluded)
    return excluded, float_tail(model)


def has_qdq(model) -> bool:
    """True when the graph already holds QuantizeLinear/DequantizeLinear nodes (explicit quantisation)."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def is_fp16(model) -> bool:
    """True when most float weights are float16 (an FP16-converted ONNX)."""
    onnx = _onnx()
    kinds = collections.Counter(init.data_type for init in model.graph.initializer)
    half, single = kinds.get(onnx.TensorProto.FLOAT16, 0), kinds.get(onnx.TensorProto.FLOAT, 0)
    return half > 0 and half >= single


def copy_metadata(source, target, precision: str) -> None:
    """Copy `lix.*` (and other) metadata_props from source to target; set lix.precision."""
    props = {p.key: p.value for p in source.metadata_props}
    props["lix.precision"] = precision
    del target.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = target.metadata_props.add()
        entry.key, entry.value = key, value


def save_model(model, path: str | Path) -> Path:
    """onnx.save (weights inside the file) through a temp file + rename."""
    onnx = _onnx()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def input_name_and_batch(model) -> tuple[str, int | None]:
    """The single graph input's name and its static batch size (None if dynamic)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BuildError(f"expected one graph input (the image), found {[i.name for i in inputs]}")
    dim = inputs[0].type.tensor_type.shape.dim[0]
    return inputs[0].name, (dim.dim_value if dim.HasField("dim_value") else None)


# --------------------------------------------------------------------------- FP32


def optimize_fp32(onnx_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's ORT_ENABLE_EXTENDED graph for the CPU provider, metadata kept, written atomically."""
    import onnxruntime as ort

    onnx = _onnx()
    source = onnx.load(str(onnx_path))
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimised)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimised))
    copy_metadata(source, model, "fp32")
    return save_model(model, out_path)


# --------------------------------------------------------------------------- INT8


def _calibration_reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayCalibrationReader(CalibrationDataReader):
        """Feeds calibration frames (float32 [N, 3, H, W], exactly as the runtime does) in batches."""

        def __init__(self, input_name: str, inputs: np.ndarray, batch: int = 1) -> None:
            self.input_name, self.inputs, self.batch = input_name, inputs, max(1, batch)
            self.position = 0

        def get_next(self):
            if self.position >= len(self.inputs):
                return None
            chunk = self.inputs[self.position:self.position + self.batch]
            self.position += self.batch
            return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

        def rewind(self) -> None:
            self.position = 0

    return ArrayCalibrationReader


def make_calibration_reader(input_name: str, inputs: np.ndarray, batch: int = 1):
    """A CalibrationDataReader over an array of model inputs."""
    return _calibration_reader_class()(input_name, inputs, batch)


@dataclass
class QuantizeResult:
    """What quantize_int8 did: the exclusions actually applied, whether pre-processing ran."""

    path: Path
    excluded_nodes: list[str] = field(default_factory=list)
    preprocessed: bool = False
    calibration_frames: int = 0
    float_tail: list[str] = field(default_factory=list)  # ArgMax + final Resize etc., always float


def _preprocess(source: Path, target: Path) -> bool:
    """quant_pre_process (symbolic shape inference + basic optimisation) when available."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        log.warning("onnxruntime.quantization.shape_inference.quant_pre_process unavailable; quantising as is")
        return False
    try:
        quant_pre_process(str(source), str(target))
    except Exception as err:  # symbolic shape inference gives up on some graphs: quantise without it
        log.warning("quant_pre_process failed (%s: %s); quantising the model as exported",
                    type(err).__name__, str(err)[:200])
        return False
    return True


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration_inputs: np.ndarray,
    nodes_to_exclude: Sequence[str] | None = None,
    calibration_method: str = "minmax",
    per_channel: bool = True,
    activations: str = "int8",
) -> QuantizeResult:
    """Static INT8 Q/DQ quantisation calibrated on `calibration_inputs`; see the module doc.

    nodes_to_exclude: None -> `default_exclusions` of the (pre-processed) graph; [] -> none. The
        `float_tail` (ArgMax and the final Resize) is excluded in every case.
    activations: "int8" (symmetric, TensorRT-compatible) or "uint8" (asymmetric, fast on x86 CPUs).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration_method not in CALIBRATION_METHODS:
        raise BuildError(f"calibration_method={calibration_method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if activations not in INT8_ACTIVATIONS:
        raise BuildError(f"activations={activations!r} is not one of {', '.join(INT8_ACTIVATIONS)}")
    inputs = np.asarray(calibration_inputs)
    if inputs.ndim != 4 or inputs.shape[1] != 3 or len(inputs) == 0:
        raise BuildError(f"calibration inputs must be float32 [N>0, 3, H, W], got shape {inputs.shape}")
    onnx = _onnx()
    source = onnx.load(str(onnx_path))
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        named = Path(tmp) / "named.onnx"
        model = onnx.load(str(onnx_path))
        ensure_node_names(model)
        onnx.save(model, str(named))
        pre = Path(tmp) / "preprocessed.onnx"
        preprocessed = _preprocess(named, pre)
        work = pre if preprocessed else named
        graph = onnx.load(str(work))
        excluded, tail = exclusions(graph, nodes_to_exclude)
        input_name, batch = input_name_and_batch(graph)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[calibration_method]
        quantized = Path(tmp) / "quantized.onnx"
        try:
            quantize_static(
                str(work), str(quantized),
                make_calibration_reader(input_name, inputs.astype(np.float32, copy=False), batch or 1),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=list(dict.fromkeys(excluded + tail)),
                extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
            )
        except Exception as err:  # calibration runs the model: ORT errors of every kind end up here
            raise BuildFailure(f"ONNX Runtime INT8 quantisation (quantize_static, {calibration_method} calibration) "
                               f"of {onnx_path} failed ({type(err).__name__}: {str(err)[:300]}); retry with "
                               "--exclude-nodes or another --calibration-method") from err
        model = onnx.load(str(quantized))
    quantized_argmax = argmax_reads_dequantized(model)
    if quantized_argmax:
        raise BuildFailure(f"quantize_static put Q/DQ in front of ArgMax {', '.join(quantized_argmax)} although "
                           f"{', '.join(tail)} were excluded; the logits must reach the ArgMax in float")
    copy_metadata(source, model, "int8")
    save_model(model, out_path)
    return QuantizeResult(out_path, excluded, preprocessed, len(inputs), tail)


# --------------------------------------------------------------------------- FP16


FP16_UNAVAILABLE = ("fp16 on the onnxruntime backend needs onnxruntime.transformers.float16 (part of the "
                    "onnxruntime wheel) and it could not be imported; use --backend tensorrt (TensorRT 10 "
                    "FP16 flag, or ModelOpt AutoCast on TensorRT 11) or build fp32 / int8 instead")


def convert_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """FP16 weights and activations, float32 graph inputs/outputs kept (keep_io_types=True).

    Uses onnxruntime.transformers.float16 (onnxconverter-common is not a dependency). Useful
    for GPU providers; the CPU provider has few FP16 kernels and may refuse the model.
    """
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as err:
        raise BuildError(FP16_UNAVAILABLE) from err
    onnx = _onnx()
    source = onnx.load(str(onnx_path))
    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    copy_metadata(source, model, "fp16")
    return save_model(model, out_path)


def build_candidate(request: CandidateRequest, watch: Stopwatch, report: BuildReport) -> Path:
    """build_engine's builder interface (builders.candidate): the ONNX Runtime artefact at request.target."""
    if request.precision == "fp32":
        with watch("optimize"):
            optimize_fp32(request.onnx, request.target)
    elif request.precision == "fp16":
        with watch("convert_fp16"):
            convert_fp16(request.onnx, request.target)
    else:
        with watch("quantize"):
            method = request.calibration_method or "minmax"
            result = quantize_int8(request.onnx, request.target, request.calibration, request.exclude_nodes, method,
                                   activations=request.int8_activations)
        report.excluded_nodes = result.excluded_nodes
        report.extra["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                        "per_channel": True, "activations": request.int8_activations,
                                        "symmetric_activations": request.int8_activations == "int8",
                                        "method": method, "float_tail": result.float_tail,
                                        "preprocessed": result.preprocessed,
                                        "calibration_frames": result.calibration_frames}
    return request.target
