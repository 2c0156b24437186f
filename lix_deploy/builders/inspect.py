"""Did the requested precision take effect? Read it from the engine, not from the build flags.

An FP32 ONNX built "in FP16 mode" on TensorRT 11 silently gives an FP32 engine, and a Q/DQ
model whose quantisation did not fuse runs in float. So after every build we ask the engine
(`IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`, needs
`ProfilingVerbosity.DETAILED` at build time) for its layers and count the data types that
actually flow into each one.

JSON shapes handled (documented by NVIDIA, kept defensive because they changed before):

* TensorRT 10.x: ``{"Layers": [layer, ...], "Bindings": ["image", "labels"]}``; each layer has
  ``"Name"``, ``"LayerType"``, ``"Inputs"``/``"Outputs"`` lists of
  ``{"Name", "Location", "Dimensions", "Format/Datatype": "Row major linear FP32"}``.
* TensorRT 11.x: ``"Bindings"`` became ``"I/O Tensors"`` (a list of objects) and
  ``"Format/Datatype"`` was split into ``"DataType"`` (``"Float"``, ``"Half"``, ``"Int8"``...) and
  ``"Format"``.
* ``ProfilingVerbosity.LAYER_NAMES_ONLY`` builds: ``"Layers"`` is a list of plain strings; no
  precision can be read, which we report as "unverifiable" rather than guessing.
* Some versions print one layer per JSON object (``get_layer_information``) or a bare list.

A layer's precision is the lowest-precision float type among its inputs (INT8 < FP8 < FP16 =
BF16 < FP32): a convolution fed INT8 runs an INT8 kernel even when its output is dequantised.
Layers that only move integers (shapes, indices, the argmax output) carry no float type and
are counted as "other".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

#: canonical precision names, lowest (cheapest) first
PRECISION_ORDER = ("int4", "fp4", "int8", "fp8", "fp16", "bf16", "fp32")
_RANK = {name: i for i, name in enumerate(PRECISION_ORDER)}
#: what each requested build precision accepts as "took effect" in a layer
ACCEPTED = {"fp32": {"fp32"}, "fp16": {"fp16", "bf16"}, "int8": {"int8", "int4", "fp8", "fp4"}}

# TRT 11 "DataType" names (nvinfer1::DataType spelled out) and TRT 10 format-string tokens.
_DTYPE_NAMES = {
    "float": "fp32", "fp32": "fp32", "float32": "fp32", "kfloat": "fp32",
    "half": "fp16", "fp16": "fp16", "float16": "fp16", "khalf": "fp16",
    "bfloat16": "bf16", "bf16": "bf16", "kbf16": "bf16",
    "int8": "int8", "kint8": "int8",
    "fp8": "fp8", "kfp8": "fp8", "e4m3": "fp8",
    "int4": "int4", "kint4": "int4", "fp4": "fp4", "kfp4": "fp4",
    "int32": "int", "kint32": "int", "int64": "int", "kint64": "int",
    "bool": "int", "kbool": "int", "uint8": "int", "kuint8": "int",
}
_FORMAT_TOKEN = re.compile(r"\b(FP32|FP16|BF16|Int8|INT8|FP8|Int4|INT4|FP4|Int32|Int64|Bool|UInt8)\b")
#: layer types whose precision is what matters for speed (convolutions and matrix products)
_COMPUTE_HINTS = ("conv", "gemm", "matrixmultiply", "fully", "deconv", "matmul")


class InspectionError(ValueError):
    """The inspector output could not be parsed at all."""


@dataclass(frozen=True)
class LayerPrecision:
    """One engine layer: its name, type, the float precision it runs in (None if integer-only)."""

    name: str
    layer_type: str
    precision: str | None
    compute: bool


@dataclass
class PrecisionSummary:
    """Histogram of layer precisions, over all layers and over compute layers (conv / matmul)."""

    layers: list[LayerPrecision] = field(default_factory=list)
    detailed: bool = True

    @property
    def histogram(self) -> dict[str, int]:
        return dict(Counter(layer.precision or "other" for layer in self.layers))

    @property
    def compute_histogram(self) -> dict[str, int]:
        return dict(Counter(layer.precision or "other" for layer in self.layers if layer.compute))

    def fraction_in(self, accepted: set[str]) -> float:
        """Share of float layers (compute layers when there are any) that run in `accepted`."""
        pool = [layer for layer in self.layers if layer.compute and layer.precision]
        if not pool:
            pool = [layer for layer in self.layers if layer.precision]
        if not pool:
            return 0.0
        return sum(layer.precision in accepted for layer in pool) / len(pool)

    def to_dict(self) -> dict:
        return {"detailed": self.detailed, "num_layers": len(self.layers), "histogram": self.histogram,
                "compute_histogram": self.compute_histogram}


@dataclass(frozen=True)
class PrecisionVerdict:
    """Pass/fail of "the requested precision took effect", with the reason in words."""

    requested: str
    passed: bool
    fraction: float
    message: str

    def to_dict(self) -> dict:
        return {"requested": self.requested, "passed": self.passed, "fraction": self.fraction, "message": self.message}


def normalise_dtype(text: Any) -> str | None:
    """"Half" / "FP16" / "kHALF" / "Row major linear FP32" -> "fp16" / "fp32"; integers -> "int"; unknown -> None."""
    if not isinstance(text, str) or not text:
        return None
    key = text.strip().lower().replace("datatype.", "").replace("-", "")
    if key in _DTYPE_NAMES:
        return _DTYPE_NAMES[key]
    match = _FORMAT_TOKEN.search(text)
    if match:
        return _DTYPE_NAMES.get(match.group(1).lower())
    return None


def _tensor_dtype(tensor: Any) -> str | None:
    """Data type of one entry of a layer's "Inputs"/"Outputs" list, any known JSON shape."""
    if not isinstance(tensor, dict):
        return None
    for key in ("DataType", "Datatype", "Data Type", "Format/Datatype", "Format/DataType", "Format"):
        found = normalise_dtype(tensor.get(key))
        if found:
            return found
    return None


def _lowest(dtypes: Iterable[str | None]) -> str | None:
    floats = [d for d in dtypes if d in _RANK]
    return min(floats, key=_RANK.__getitem__) if floats else None


def _layer_from_json(layer: Any, index: int) -> LayerPrecision | None:
    if isinstance(layer, str):  # LAYER_NAMES_ONLY
        return None
    if not isinstance(layer, dict):
        raise InspectionError(f"layer {index}: expected an object or a name, got {type(layer).__name__}")
    name = str(layer.get("Name", f"layer_{index}"))
    layer_type = str(layer.get("LayerType", layer.get("Layer Type", layer.get("ParameterType", ""))))
    inputs = layer.get("Inputs") or []
    outputs = layer.get("Outputs") or []
    precision = _lowest(_tensor_dtype(t) for t in inputs)
    if precision is None:  # e.g. a constant layer: no inputs, so read its outputs
        precision = _lowest(_tensor_dtype(t) for t in outputs)
    kind = (layer_type + " " + str(layer.get("ParameterType", ""))).lower()
    compute = any(hint in kind for hint in _COMPUTE_HINTS)
    return LayerPrecision(name, layer_type, precision, compute)


def _layer_list(data: Any) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("Layers", "layers"):
            if key in data:
                if not isinstance(data[key], list):
                    raise InspectionError(f'"{key}" is not a list')
                return data[key]
        if "Name" in data:  # get_layer_information: one layer object
            return [data]
    raise InspectionError("no \"Layers\" list in the inspector JSON")


def parse_engine_information(text: str | dict | list) -> PrecisionSummary:
    """Inspector JSON (string or parsed) -> PrecisionSummary; `detailed` False when only names were printed."""
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InspectionError(f"inspector output is not JSON: {err}") from None
    else:
        data = text
    raw = _layer_list(data)
    layers = [layer for i, item in enumerate(raw) if (layer := _layer_from_json(item, i)) is not None]
    return PrecisionSummary(layers=layers, detailed=any(layer.precision for layer in layers))


def check_precision(summary: PrecisionSummary, requested: str, min_fraction: float = 0.0) -> PrecisionVerdict:
    """Did `requested` ("fp32" | "fp16" | "int8") take effect?

    Fails when no layer runs in the requested precision (or a lower one it implies), when the
    share of compute layers that do is not above `min_fraction`, or when the engine was built
    without detailed profiling (nothing can be verified). FP32 always passes if readable: a
    strongly typed FP32 build may legitimately keep integer or FP16 I/O layers.
    """
    if requested not in ACCEPTED:
        raise ValueError(f"requested={requested!r} is not one of {', '.join(ACCEPTED)}")
    if not summary.detailed:
        return PrecisionVerdict(requested, False, 0.0,
                                "the engine has no per-layer type information (built without "
                                "ProfilingVerbosity.DETAILED); cannot verify that "
                                f"{requested} took effect")
    accepted = ACCEPTED[requested]
    fraction = summary.fraction_in(accepted)
    hist = summary.compute_histogram or summary.histogram
    if requested == "fp32":
        return PrecisionVerdict(requested, True, fraction, f"fp32 engine; layer precisions {hist}")
    if fraction <= 0.0 or fraction < min_fraction:
        found = ", ".join(f"{k}: {v}" for k, v in sorted(hist.items()))
        hint = {"fp16": "on TensorRT >= 10.12 / 11 precision comes from the ONNX: convert it to FP16 "
                        "(ModelOpt AutoCast) or build weakly typed with BuilderFlag.FP16 on TensorRT 10",
                "int8": "the ONNX needs Q/DQ nodes (ModelOpt or ONNX Runtime quantize_static) that "
                        "TensorRT can fuse into INT8 kernels"}[requested]
        return PrecisionVerdict(requested, False, fraction,
                                f"{requested} was requested but {fraction:.0%} of the compute layers run in it "
                                f"(need > {min_fraction:.0%}); layer precisions: {found}; {hint}")
    return PrecisionVerdict(requested, True, fraction,
                            f"{fraction:.0%} of the compute layers run in {requested}; layer precisions {hist}")
