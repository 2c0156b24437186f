"""The node's parameters: one table, PARAMETERS, and everything else derived from it.

Each parameter is declared once, with its name, ROS type, default, description and checks; from
that table come the rclpy declarations (ParameterDescriptor: description, read-only, range), the
settings classes the node runs on (StartupParameters, LiveSettings), the validation, the shipped
config/segmenter.yaml and the README's parameter table (tests keep both identical to what
`python -m lix_seg.parameters yaml|markdown` prints).

The artefact describes itself (input size, normalisation, classes, palette), so those parameters
default to the artefact's values and a launch file that states them is *validated*, not obeyed:
a mismatch means the wrong model or the wrong config, and the node refuses to start. Parameters
that need a new model or new publishers are read-only; the palette, the publish toggles and the
overlay alpha change live.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lix_deploy.runtime import BACKENDS
from lix_deploy.runtime.postprocess import palette_from_ints

__all__ = ["NodeParameter", "PARAMETERS", "PARAMETER", "LIVE_PARAMETERS", "StartupParameters", "LiveSettings",
           "declare_startup_parameters", "declare_artifact_parameters", "live_settings", "check_against_artifact",
           "palette_parameter", "palette_to_ints", "render_yaml", "render_markdown"]

NORMALIZATION_TOLERANCE = 1e-4
IMAGE_TRANSPORTS = ("raw", "compressed")
# ROS parameter type -> what a settings class holds (arrays as tuples).
PYTHON_TYPES: dict[str, Any] = {"bool": bool, "integer": int, "double": float, "string": str,
                                "string_array": tuple[str, ...], "integer_array": tuple[int, ...],
                                "double_array": tuple[float, ...]}


@dataclass(frozen=True)
class NodeParameter:
    """One parameter of the node, declared once.

    name, type (a key of PYTHON_TYPES), default (() for an array: unset), description (the
    descriptor's, the YAML comment, the README row). `live`: changes apply to the next frame,
    else read-only. `check(value)` returns what is wrong with a value, as the text that follows
    the name in the error ("=-1 must be >= 0"), or None. `value_range` (lo, hi) is enforced by
    rclpy (FloatingPointRange) and by the check. A parameter the artefact records has
    `from_artifact(info)`, its default, and `resolve(value, info)`, which raises ValueError naming
    the parameter when the value contradicts the artefact and returns what the settings hold;
    `example` stands, commented out, in the YAML for a parameter without a fixed default.
    """

    name: str
    type: str
    default: Any
    description: str
    live: bool = False
    check: Callable[[Any], str | None] | None = None
    value_range: tuple[float, float] | None = None
    from_artifact: Callable[[Any], Any] | None = None
    resolve: Callable[[Any, Any], Any] | None = None
    example: str = ""

    @property
    def fixed_default(self) -> bool:
        """Whether the default is a value of its own (not the artefact's, not unset)."""
        return self.from_artifact is None and self.default != ()

    def problem(self, value) -> str | None:
        """What is wrong with `value` on its own (without the artefact), or None."""
        if self.value_range is not None and not self.value_range[0] <= value <= self.value_range[1]:
            return f"={value} must lie in [{self.value_range[0]}, {self.value_range[1]}]"
        return self.check(value) if self.check is not None else None


# ---- checks (the text after the parameter's name in the error) ---------------------------------
def _required(why: str) -> Callable[[Any], str | None]:
    return lambda value: None if value else f" is required: {why}"


def _one_of(choices) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"={value!r} is not one of {', '.join(choices)}"


def _at_least(low: int, note: str = "") -> Callable[[Any], str | None]:
    return lambda value: None if value >= low else f" must be >= {low}{note}, got {value}"


def _positive(unit: str) -> Callable[[Any], str | None]:
    return lambda value: None if value > 0 else f" must be > 0 {unit}, got {value}"


# ---- against the artefact ----------------------------------------------------------------------
def _same_input_size(value, info) -> tuple:
    if list(value) != list(info.input_size):
        raise ValueError(f"parameter input_size={list(value)} but the artefact takes {list(info.input_size)} "
                         "(input size is fixed at export; leave the parameter unset or re-export)")
    return tuple(value)


def _same_normalization(name: str) -> Callable[[Any, Any], tuple]:
    def resolve(value, info) -> tuple:
        recorded = getattr(info, name)
        if len(value) != len(recorded) or any(abs(a - b) > NORMALIZATION_TOLERANCE for a, b in zip(value, recorded)):
            raise ValueError(f"parameter {name}={list(value)} but the artefact's normalisation ({info.normalization}"
                             f" into the graph) is {name}={list(recorded)}")
        return tuple(value)

    return resolve


def _one_name_per_class(value, info) -> tuple:
    if len(value) != info.num_classes:
        raise ValueError(f"parameter class_names has {len(value)} names, the artefact has {info.num_classes} classes")
    return tuple(value)


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


# ---- the table ---------------------------------------------------------------------------------
PARAMETERS: tuple[NodeParameter, ...] = (
    NodeParameter("artifact_path", "string", "",
                  "Exported model: .onnx (ONNX Runtime) or a TensorRT engine X with its X.json sidecar; required",
                  check=_required("the .onnx or TensorRT engine to run")),
    NodeParameter("backend", "string", "auto", f"One of {', '.join(BACKENDS)} (auto: from the file's suffix)",
                  check=_one_of(BACKENDS)),
    NodeParameter("image_transport", "string", "raw",
                  "Camera input: raw (sensor_msgs/Image on `image`) or compressed (sensor_msgs/CompressedImage on "
                  "`image/compressed`, image_transport's naming), decoded once on the inference thread",
                  check=_one_of(IMAGE_TRANSPORTS)),
    NodeParameter("providers", "string_array", (),
                  "ONNX Runtime execution providers, e.g. [cuda, cpu]; unset: TensorRT > CUDA > CPU as available",
                  example="[cuda, cpu]"),
    NodeParameter("intra_op_threads", "integer", 0, "CPU threads per inference; 0: runtime default",
                  check=_at_least(0, " (0: runtime default)")),
    NodeParameter("warmup_runs", "integer", 1, "Untimed inferences on a blank frame at start", check=_at_least(0)),
    NodeParameter("diagnostics_period", "double", 1.0, "Seconds between /diagnostics messages",
                  check=_positive("s")),
    NodeParameter("publish_mask", "bool", True, "Publish ~/mask (mono8 class ids)", live=True),
    NodeParameter("publish_colored_mask", "bool", True,
                  "Publish ~/colored_mask (rgb8; computed only while someone subscribes)", live=True),
    NodeParameter("publish_overlay", "bool", False, "Publish ~/overlay (rgb8 mask over image)", live=True),
    NodeParameter("overlay_alpha", "double", 0.5, "Weight of the mask colours in ~/overlay", live=True,
                  value_range=(0.0, 1.0)),
    NodeParameter("input_size", "integer_array", (),
                  "Model input [height, width]; recorded in the artefact (validated, informational)",
                  from_artifact=lambda info: [int(v) for v in info.input_size], resolve=_same_input_size,
                  example="[192, 640]"),
    NodeParameter("mean", "double_array", (),
                  "Normalisation mean (0..255 units), folded into the artefact's graph: validated only",
                  from_artifact=lambda info: [float(v) for v in info.mean], resolve=_same_normalization("mean"),
                  example="[123.675, 116.28, 103.53]"),
    NodeParameter("std", "double_array", (),
                  "Normalisation std (0..255 units), folded into the artefact's graph: validated only",
                  from_artifact=lambda info: [float(v) for v in info.std], resolve=_same_normalization("std"),
                  example="[58.395, 57.12, 57.375]"),
    NodeParameter("class_names", "string_array", (),
                  "Class names in id order (default: the artefact's); the count must match the model",
                  from_artifact=lambda info: list(info.class_names), resolve=_one_name_per_class,
                  example="[Terrain, Sky, Tree, ...]"),
    NodeParameter("color_palette", "integer_array", (),
                  "0xRRGGBB colour per class id for ~/colored_mask and ~/overlay (default: the artefact's)",
                  live=True, from_artifact=lambda info: palette_to_ints(info.palette),
                  resolve=lambda value, info: palette_parameter(value, info.num_classes),
                  example="[0xd200c8, 0x5ac8ff, ...]"),
)
PARAMETER: dict[str, NodeParameter] = {p.name: p for p in PARAMETERS}
LIVE_PARAMETERS = tuple(p.name for p in PARAMETERS if p.live)
AT_START = tuple(p for p in PARAMETERS if p.from_artifact is None)  # declared when the node starts
FROM_ARTIFACT = tuple(p for p in PARAMETERS if p.from_artifact is not None)  # declared once the model is loaded


def _settings_class(name: str, doc: str, params: tuple[NodeParameter, ...]) -> type:
    """A frozen, keyword-only dataclass with one field per parameter (its default where it has one of its
    own) that holds arrays as tuples and checks every value on construction."""

    def __post_init__(self) -> None:
        for p in params:
            value = getattr(self, p.name)
            if isinstance(value, list):
                object.__setattr__(self, p.name, value := tuple(value))
            problem = p.problem(value)
            if problem is not None:
                raise ValueError(f"parameter {p.name}{problem}")

    fields = [(p.name, Any if p.resolve else PYTHON_TYPES[p.type],
               dataclasses.field(default=p.default) if p.from_artifact is None else dataclasses.field())
              for p in params]
    cls = dataclasses.make_dataclass(name, fields, frozen=True, kw_only=True,
                                     namespace={"__doc__": doc, "__post_init__": __post_init__})
    cls.__module__ = __name__
    return cls


StartupParameters = _settings_class(
    "StartupParameters", "What is fixed for the node's lifetime (changing it needs a restart).",
    tuple(p for p in PARAMETERS if not p.live and p.from_artifact is None))
LiveSettings = _settings_class(
    "LiveSettings", "What the inference thread reads per frame; replaced whole when a live parameter changes "
    "(color_palette as RGB triples).", tuple(p for p in PARAMETERS if p.live))


# ---- rclpy -------------------------------------------------------------------------------------
def _descriptor(p: NodeParameter):
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor

    extra = {}
    if p.value_range is not None:
        extra["floating_point_range"] = [FloatingPointRange(from_value=p.value_range[0], to_value=p.value_range[1],
                                                            step=0.0)]
    return ParameterDescriptor(description=p.description, read_only=not p.live, **extra)


def _declare(node, params: tuple[NodeParameter, ...], info=None) -> dict[str, Any]:
    """Declare those of `params` not declared yet (a lifecycle node configures again); return their values."""
    from rclpy.parameter import Parameter

    for p in params:
        if not node.has_parameter(p.name):
            default = p.from_artifact(info) if p.from_artifact is not None else p.default
            if isinstance(default, tuple):
                default = list(default)
            # An empty array has no type of its own: declare the type alone (the parameter stays unset).
            node.declare_parameter(p.name, Parameter.Type[p.type.upper()] if default == [] else default,
                                   _descriptor(p))
    values = {p.name: node.get_parameter_or(p.name).value for p in params}  # None: unset
    return {p.name: p.default if values[p.name] is None else values[p.name] for p in params}


def declare_startup_parameters(node) -> StartupParameters:
    """Declare the runtime parameters and the live toggles (all but the artefact's); return the startup ones."""
    values = _declare(node, AT_START)
    return StartupParameters(**{name: values[name] for name in StartupParameters.__dataclass_fields__})


def _resolved(values: Mapping[str, Any], info) -> dict[str, Any]:
    """`values` with each artefact parameter checked against `info` (ValueError names the first bad one)."""
    return {name: PARAMETER[name].resolve(value, info) if PARAMETER[name].resolve else value
            for name, value in values.items()}


def live_settings(values: Mapping[str, Any], info, current: LiveSettings | None = None) -> LiveSettings:
    """LiveSettings from live parameter values (all of them, or changes to `current`); ValueError names a bad one."""
    resolved = _resolved({name: v for name, v in values.items() if name in LIVE_PARAMETERS}, info)
    return dataclasses.replace(current, **resolved) if current is not None else LiveSettings(**resolved)


def declare_artifact_parameters(node, info) -> LiveSettings:
    """Declare the parameters the artefact records (its values as defaults) unless declared already, check
    them against it, and return the first LiveSettings. Raises ValueError naming the offending parameter."""
    values = _declare(node, FROM_ARTIFACT, info)
    values.update({name: node.get_parameter(name).value for name in LIVE_PARAMETERS if name not in values})
    resolved = _resolved(values, info)  # in table order: the first contradiction is the one reported
    return LiveSettings(**{name: resolved[name] for name in LIVE_PARAMETERS})


def check_against_artifact(info, input_size, mean, std, class_names) -> None:
    """Raise ValueError naming the first parameter that contradicts the artefact's metadata."""
    _resolved({"input_size": input_size, "mean": mean, "std": std, "class_names": class_names}, info)


# ---- the YAML and the README table -------------------------------------------------------------
def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.isidentifier() else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return repr(value)


def render_yaml() -> str:
    """config/segmenter.yaml: each parameter under its description, commented out where its default is the
    artefact's or unset."""
    lines = [
        "# Parameters of `ros2 run lix_seg segmenter --ros-args --params-file segmenter.yaml`.",
        "# Made by `python -m lix_seg.parameters yaml` from the table in lix_seg/parameters.py.",
        "# Read-only parameters need a restart; these change live (ros2 param set /segmenter publish_overlay true):",
        f"# {', '.join(LIVE_PARAMETERS)}.",
        "segmenter:",
        "  ros__parameters:",
    ]
    for p in PARAMETERS:
        if p is FROM_ARTIFACT[0]:
            lines += ["    # Recorded in the artefact; default to its values. If set here they are validated, and a",
                      "    # mismatch stops the node (wrong model for this config):"]
        entry = f"{p.name}: {_yaml_value(p.default)}" if p.fixed_default else f"# {p.name}: {p.example}"
        lines += [f"    # {p.description}", f"    {entry}"]
    lines += ["    # QoS overrides, e.g. a camera driver that publishes reliable only:",
              "    # qos_overrides:",
              "    #   /camera/image_raw:",
              "    #     subscription:",
              "    #       reliability: reliable"]
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The README's parameter table."""
    rows = ["| parameter | type | default | changes | description |", "|---|---|---|---|---|"]
    for p in PARAMETERS:
        default = (f"`{_yaml_value(p.default)}`" if p.fixed_default
                   else "the artefact's" if p.from_artifact is not None else "unset")
        rows.append(f"| `{p.name}` | {p.type} | {default} | {'live' if p.live else 'restart'} | {p.description} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lix_seg.parameters",
                                     description="Print config/segmenter.yaml or the README's parameter table, "
                                     "as the parameter table makes them.")
    parser.add_argument("what", choices=("yaml", "markdown"))
    args = parser.parse_args(argv)
    sys.stdout.write(render_yaml() if args.what == "yaml" else render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
