"""The node's parameters: declared with descriptors, and checked against what the artefact records.

The artefact describes itself (input size, normalisation, classes, palette), so those parameters
default to the artefact's values and a launch file that states them is *validated*, not obeyed:
a mismatch means the wrong model or the wrong config, and the node refuses to start. Parameters
that need a new model or new publishers are read-only; the palette, the publish toggles and the
overlay alpha change live.
"""

from __future__ import annotations

from dataclasses import dataclass

from lix_deploy.runtime import BACKENDS
from lix_deploy.runtime.postprocess import palette_from_ints

__all__ = ["StartupParameters", "LiveSettings", "declare_startup_parameters", "declare_artifact_parameters",
           "check_against_artifact", "palette_parameter", "palette_to_ints", "LIVE_PARAMETERS"]

LIVE_PARAMETERS = ("color_palette", "publish_mask", "publish_colored_mask", "publish_overlay", "overlay_alpha")
NORMALIZATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class StartupParameters:
    """What is fixed for the node's lifetime (changing it needs a restart)."""

    artifact_path: str
    backend: str = "auto"
    providers: tuple[str, ...] = ()
    intra_op_threads: int = 0
    warmup_runs: int = 1
    diagnostics_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.artifact_path:
            raise ValueError("parameter artifact_path is required: the .onnx or TensorRT engine to run")
        if self.backend not in BACKENDS:
            raise ValueError(f"parameter backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.intra_op_threads < 0:
            raise ValueError("parameter intra_op_threads must be >= 0 (0: runtime default), "
                             f"got {self.intra_op_threads}")
        if self.warmup_runs < 0:
            raise ValueError(f"parameter warmup_runs must be >= 0, got {self.warmup_runs}")
        if not self.diagnostics_period_s > 0:
            raise ValueError(f"parameter diagnostics_period must be > 0 s, got {self.diagnostics_period_s}")


@dataclass(frozen=True)
class LiveSettings:
    """What the inference thread reads per frame; replaced whole when a live parameter changes."""

    palette: tuple[tuple[int, int, int], ...]
    publish_mask: bool = True
    publish_colored_mask: bool = True
    publish_overlay: bool = False
    overlay_alpha: float = 0.5


def palette_to_ints(palette) -> list[int]:
    """[[r, g, b], ...] -> [0xRRGGBB, ...] (the ROS color_palette convention)."""
    return [(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in palette]


def palette_parameter(values, num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """color_palette ints -> RGB triples; one colour per class at least, each 0x000000..0xFFFFFF."""
    values = list(values)
    if len(values) < num_classes:
        raise ValueError(f"parameter color_palette has {len(values)} colours, the model has {num_classes} classes")
    try:
        return tuple(tuple(rgb) for rgb in palette_from_ints(values))  # type: ignore[misc]
    except ValueError as err:
        raise ValueError(f"parameter color_palette: {err}") from None


def check_against_artifact(info, input_size, mean, std, class_names) -> None:
    """Raise ValueError naming the first parameter that contradicts the artefact's metadata."""
    if list(input_size) != list(info.input_size):
        raise ValueError(f"parameter input_size={list(input_size)} but the artefact takes {list(info.input_size)} "
                         "(input size is fixed at export; leave the parameter unset or re-export)")
    for name, given, recorded in (("mean", mean, info.mean), ("std", std, info.std)):
        if len(given) != len(recorded) or any(abs(a - b) > NORMALIZATION_TOLERANCE for a, b in zip(given, recorded)):
            raise ValueError(f"parameter {name}={list(given)} but the artefact's normalisation ({info.normalization}"
                             f" into the graph) is {name}={list(recorded)}")
    if len(class_names) != info.num_classes:
        raise ValueError(f"parameter class_names has {len(class_names)} names, the artefact has "
                         f"{info.num_classes} classes")


def _descriptor(description: str, read_only: bool, **extra):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description, read_only=read_only, **extra)


def declare_startup_parameters(node) -> StartupParameters:
    """Declare the read-only runtime parameters and the live toggles; return the startup ones."""
    from rcl_interfaces.msg import FloatingPointRange
    from rclpy.parameter import Parameter

    node.declare_parameter("artifact_path", "", _descriptor(
        "Exported model: .onnx (ONNX Runtime) or a TensorRT engine with its <engine>.json sidecar", True))
    node.declare_parameter("backend", "auto", _descriptor(f"One of {', '.join(BACKENDS)}", True))
    node.declare_parameter("providers", Parameter.Type.STRING_ARRAY, _descriptor(
        "ONNX Runtime execution providers, e.g. [cuda, cpu]; unset: TensorRT > CUDA > CPU as available", True))
    node.declare_parameter("intra_op_threads", 0, _descriptor("CPU threads per inference; 0: runtime default", True))
    node.declare_parameter("warmup_runs", 1, _descriptor("Untimed inferences on a blank frame at start", True))
    node.declare_parameter("diagnostics_period", 1.0, _descriptor("Seconds between /diagnostics messages", True))
    node.declare_parameter("publish_mask", True, _descriptor("Publish ~/mask (mono8 class ids)", False))
    node.declare_parameter("publish_colored_mask", True, _descriptor("Publish ~/colored_mask (rgb8)", False))
    node.declare_parameter("publish_overlay", False, _descriptor("Publish ~/overlay (rgb8 mask over image)", False))
    node.declare_parameter("overlay_alpha", 0.5, _descriptor(
        "Weight of the mask colours in ~/overlay", False,
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)]))
    providers = node.get_parameter_or("providers", Parameter("providers", value=[])).value or []
    return StartupParameters(
        artifact_path=node.get_parameter("artifact_path").value,
        backend=node.get_parameter("backend").value,
        providers=tuple(providers),
        intra_op_threads=node.get_parameter("intra_op_threads").value,
        warmup_runs=node.get_parameter("warmup_runs").value,
        diagnostics_period_s=node.get_parameter("diagnostics_period").value,
    )


def declare_artifact_parameters(node, info) -> LiveSettings:
    """Declare the parameters the artefact records (its values as defaults), check any override, and
    return the first LiveSettings. Raises ValueError naming the offending parameter."""
    h, w = info.input_size
    declared = {
        "input_size": (node.declare_parameter("input_size", [int(h), int(w)], _descriptor(
            "Model input [height, width]; recorded in the artefact (validated, informational)", True))),
        "mean": node.declare_parameter("mean", [float(v) for v in info.mean], _descriptor(
            "Normalisation mean (0..255 units), folded into the artefact's graph: validated only", True)),
        "std": node.declare_parameter("std", [float(v) for v in info.std], _descriptor(
            "Normalisation std (0..255 units), folded into the artefact's graph: validated only", True)),
        "class_names": node.declare_parameter("class_names", list(info.class_names), _descriptor(
            "Class names in id order (default: the artefact's); the count must match the model", True)),
        "color_palette": node.declare_parameter("color_palette", palette_to_ints(info.palette), _descriptor(
            "0xRRGGBB colour per class id for ~/colored_mask and ~/overlay (default: the artefact's)", False)),
    }
    values = {name: param.value for name, param in declared.items()}
    check_against_artifact(info, values["input_size"], values["mean"], values["std"], values["class_names"])
    return LiveSettings(
        palette=palette_parameter(values["color_palette"], info.num_classes),
        publish_mask=node.get_parameter("publish_mask").value,
        publish_colored_mask=node.get_parameter("publish_colored_mask").value,
        publish_overlay=node.get_parameter("publish_overlay").value,
        overlay_alpha=node.get_parameter("overlay_alpha").value,
    )
