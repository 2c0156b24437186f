"""The TensorRT version gate, pure (tested with made-up versions; no TensorRT needed): which network typing,
builder flags and ONNX preparation one precision gets on one TensorRT version.

* TensorRT >= 10.12 and 11.x build STRONGLY TYPED networks: precision comes from the ONNX.
  INT8 = a Q/DQ ONNX (NVIDIA ModelOpt when importable, else ONNX Runtime's symmetric QDQ);
  FP16 = an FP16 ONNX from ModelOpt AutoCast. Without ModelOpt, FP16 is an error on TRT 11
  (no FP16 flag left) and falls back to a weakly typed FP16-flag build on 10.12+.
* TensorRT 10.0 - 10.11 build WEAKLY TYPED networks with BuilderFlag.FP16 (and
  BuilderFlag.INT8 for a Q/DQ model); implicit calibration is never used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lix_deploy.artifact import PRECISIONS
from lix_deploy.runtime.backends.tensorrt_common import MIN_SUPPORTED, STRONGLY_TYPED_FROM, parse_trt_version

from .onnxruntime_build import BuildError


@dataclass(frozen=True)
class BuildPlan:
    """How to build one precision on one TensorRT version."""

    trt_version: str
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    onnx_transform: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def plan_build(trt_version: str, precision: str, *, onnx_has_qdq: bool = False, onnx_is_fp16: bool = False,
               have_modelopt: bool = False) -> BuildPlan:
    """Network typing, builder flags and ONNX preparation for `precision` on `trt_version`; see module doc."""
    if precision not in PRECISIONS:
        raise BuildError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        version = parse_trt_version(trt_version)
    except ValueError:
        raise BuildError(f"cannot read a TensorRT version from {trt_version!r}") from None
    if version[:2] < MIN_SUPPORTED:
        raise BuildError(f"TensorRT {trt_version} is too old: lix-seg builds with TensorRT >= 10.0 "
                         "(the tensor-based I/O API); JetPack 6 ships 10.3")
    strong = version[:2] >= STRONGLY_TYPED_FROM
    trt11 = version[0] >= 11
    notes: list[str] = []
    if precision == "fp32":
        if onnx_has_qdq or onnx_is_fp16:
            raise BuildError("--precision fp32 was requested but the ONNX is already quantised / FP16; "
                             "pass the FP32 export")
        return BuildPlan(trt_version, precision, strong, (), "none",
                         ("strongly typed: FP32 ONNX -> FP32 engine",) if strong else ())
    if precision == "int8":
        transform = "none" if onnx_has_qdq else ("modelopt_int8" if have_modelopt else "ort_int8")
        if transform == "ort_int8":
            notes.append("ModelOpt not importable: Q/DQ ONNX from ONNX Runtime quantize_static "
                         "(symmetric INT8, float elsewhere)")
        if strong:
            return BuildPlan(trt_version, precision, True, (), transform,
                             tuple(notes) + ("strongly typed: INT8 from the Q/DQ nodes",))
        return BuildPlan(trt_version, precision, False, ("FP16", "INT8"), transform,
                         tuple(notes) + (f"TensorRT {trt_version} < 10.12: weakly typed, FP16 + INT8 flags "
                                         "with an explicitly quantised (Q/DQ) ONNX",))
    # fp16
    if onnx_is_fp16:
        return BuildPlan(trt_version, precision, strong, () if strong else ("FP16",), "none",
                         ("the ONNX is already FP16",))
    if strong and have_modelopt:
        return BuildPlan(trt_version, precision, True, (), "modelopt_fp16",
                         ("strongly typed: FP16 ONNX from ModelOpt AutoCast (keep_io_types=True)",))
    if trt11:
        raise BuildError(
            f"fp16 on TensorRT {trt_version} needs an FP16 ONNX (TensorRT 11 removed BuilderFlag.FP16 and builds "
            "strongly typed): install NVIDIA ModelOpt (pip install nvidia-modelopt[onnx]) for AutoCast, or pass "
            "an FP16-converted ONNX"
        )
    if strong:
        notes.append("ModelOpt not importable: weakly typed build with BuilderFlag.FP16 "
                     "(deprecated on 10.12+, removed in 11)")
    return BuildPlan(trt_version, precision, False, ("FP16",), "none", tuple(notes))
