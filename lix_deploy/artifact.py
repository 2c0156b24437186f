"""What an exported artefact carries about itself: classes, palette, input convention, provenance.

Every ONNX file written by `lix_deploy.export` stores its deployment facts as string
`metadata_props` under `lix.*` keys (JSON where structured), so a runtime discovers the input
size, normalisation, outputs and class names from the file alone, never from a config that can
drift. TensorRT engines cannot hold such props; they carry the same keys in a sidecar JSON
`<engine>.json` (see `write_sidecar`). This module is torch-free (numpy / onnx only).

Keys (format version 1):
    lix.format_version   "1"
    lix.class_names      JSON list of names, train-id order
    lix.palette          JSON list of [r, g, b], one per class
    lix.input_size       JSON [H, W] (static model size)
    lix.mean, lix.std    JSON lists of 3 floats in 0..255 units; lix.normalization = "folded"
    lix.input_layout     "NCHW-RGB-0-255"
    lix.input_name       name of the graph input ("image")
    lix.outputs          JSON list of output names in graph order ("labels", optionally "logits")
    lix.label_dtype      "uint8" | "int32"
    lix.dynamic_batch    "true" | "false"
    lix.precision        "fp32" | "fp16" | "int8"
    lix.dataset          dataset the class set comes from (e.g. "synthetic", "vkitti2")
    lix.source_checkpoint, lix.source_checkpoint_sha256, lix.model_signature (JSON)
    lix.opset, lix.exporter (e.g. "torch 2.13.0 dynamo")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

# How an artefact runs (and is built): "auto" picks from the file (runtime) or the machine (builder),
# then every backend of the one table (lix_deploy.backend_table).
from lix_deploy.backend_table import BACKENDS  # noqa: F401  (re-exported)

FORMAT_VERSION = "1"
PREFIX = "lix."
INPUT_LAYOUT = "NCHW-RGB-0-255"
INPUT_NAME = "image"
PRECISIONS = ("fp32", "fp16", "int8")
LABEL_DTYPES = ("uint8", "int32")
SIDECAR_SUFFIX = ".json"

# The keys every artefact must have; read_metadata names the first one missing.
REQUIRED_KEYS = ("format_version", "class_names", "palette", "input_size", "mean", "std", "outputs", "precision")


class ArtifactError(ValueError):
    """An artefact (ONNX file, engine or its sidecar) that cannot be used: missing, unreadable, malformed
    metadata, unexpected tensors. The message names the file, the problem and what to do."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """The artefact file does not exist (also a FileNotFoundError, for callers that catch that)."""


@dataclass
class ArtifactInfo:
    """The deployment facts of one artefact (see the module docstring for the stored keys)."""

    class_names: list[str]
    palette: list[list[int]]
    input_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    outputs: list[str]
    precision: str = "fp32"
    input_name: str = INPUT_NAME
    input_layout: str = INPUT_LAYOUT
    normalization: str = "folded"
    label_dtype: str = "uint8"
    dynamic_batch: bool = False
    dataset: str = ""
    source_checkpoint: str = ""
    source_checkpoint_sha256: str = ""
    model_signature: dict[str, Any] = field(default_factory=dict)
    opset: int | None = None
    exporter: str = ""
    format_version: str = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)  # other lix.* keys, kept verbatim

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        self.palette = [[int(c) for c in rgb] for rgb in self.palette]
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        self.outputs = [str(o) for o in self.outputs]
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        if len(self.palette) != len(self.class_names) or any(
            len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb) for rgb in self.palette
        ):
            raise ValueError(f"palette must hold one [r, g, b] in 0..255 per class ({len(self.class_names)}), "
                             f"got {self.palette!r}")
        if min(self.input_size) < 1:
            raise ValueError(f"input_size must be positive (H, W), got {self.input_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3 values with std > 0, got mean={self.mean!r} std={self.std!r}")
        if "labels" not in self.outputs:
            raise ValueError(f"outputs must include 'labels', got {self.outputs!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.label_dtype not in LABEL_DTYPES:
            raise ValueError(f"label_dtype={self.label_dtype!r} is not one of {', '.join(LABEL_DTYPES)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_logits(self) -> bool:
        return "logits" in self.outputs

    def palette_lut(self):
        """(256, 3) uint8 lookup table: class id -> colour, black for ids without a class."""
        import numpy as np

        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut

    def to_props(self) -> dict[str, str]:
        """The `lix.*` string properties stored in the ONNX file (or an engine sidecar)."""
        dump = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
        props = {
            "format_version": self.format_version,
            "class_names": dump(self.class_names),
            "palette": dump(self.palette),
            "input_size": dump(list(self.input_size)),
            "mean": dump(self.mean),
            "std": dump(self.std),
            "normalization": self.normalization,
            "input_layout": self.input_layout,
            "input_name": self.input_name,
            "outputs": dump(self.outputs),
            "label_dtype": self.label_dtype,
            "dynamic_batch": "true" if self.dynamic_batch else "false",
            "precision": self.precision,
            "dataset": self.dataset,
            "source_checkpoint": self.source_checkpoint,
            "source_checkpoint_sha256": self.source_checkpoint_sha256,
            "model_signature": json.dumps(self.model_signature, sort_keys=True, separators=(",", ":")),
            "exporter": self.exporter,
        }
        if self.opset is not None:
            props["opset"] = str(self.opset)
        out = {PREFIX + key: value for key, value in props.items()}
        out.update({k if k.startswith(PREFIX) else PREFIX + k: str(v) for k, v in self.extra.items()})
        return out

    @classmethod
    def from_props(cls, props: Mapping[str, str], path: str | Path = "<metadata>") -> "ArtifactInfo":
        """Parse `lix.*` properties (other keys ignored); ArtifactError names what is missing or bad."""
        values = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        missing = [k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise ArtifactError(path, f"no LIX metadata key {PREFIX}{missing[0]} (was it written by "
                                      "lix_deploy.export? found keys: "
                                      f"{sorted(props)[:10] or 'none'})")
        if values["format_version"] != FORMAT_VERSION:
            raise ArtifactError(path, f"metadata format version {values['format_version']!r}; this code reads "
                                      f"version {FORMAT_VERSION}")

        def load(key: str, default: Any = None) -> Any:
            if key not in values:
                return default
            try:
                return json.loads(values[key])
            except json.JSONDecodeError as err:
                raise ArtifactError(path, f"metadata {PREFIX}{key} is not valid JSON ({err}): "
                                          f"{values[key][:80]!r}") from None

        known = {"format_version", "class_names", "palette", "input_size", "mean", "std", "normalization",
                 "input_layout", "input_name", "outputs", "label_dtype", "dynamic_batch", "precision", "dataset",
                 "source_checkpoint", "source_checkpoint_sha256", "model_signature", "opset", "exporter"}
        try:
            return cls(
                class_names=load("class_names"), palette=load("palette"), input_size=tuple(load("input_size")),
                mean=load("mean"), std=load("std"), outputs=load("outputs"), precision=values["precision"],
                input_name=values.get("input_name", INPUT_NAME),
                input_layout=values.get("input_layout", INPUT_LAYOUT),
                normalization=values.get("normalization", "folded"),
                label_dtype=values.get("label_dtype", "uint8"),
                dynamic_batch=values.get("dynamic_batch", "false") == "true",
                dataset=values.get("dataset", ""), source_checkpoint=values.get("source_checkpoint", ""),
                source_checkpoint_sha256=values.get("source_checkpoint_sha256", ""),
                model_signature=load("model_signature", {}),
                opset=int(values["opset"]) if values.get("opset") else None,
                exporter=values.get("exporter", ""), format_version=values["format_version"],
                extra={PREFIX + k: v for k, v in values.items() if k not in known},
            )
        except (TypeError, ValueError) as err:
            if isinstance(err, ArtifactError):
                raise
            raise ArtifactError(path, f"malformed LIX metadata: {err}") from None


def write_metadata(onnx_model, info: ArtifactInfo):
    """Store `info` as the model's `lix.*` metadata_props (replacing older lix.* entries); returns the model.

    `onnx_model` is an onnx.ModelProto, modified in place. Props that are not ours are kept.
    """
    props = info.to_props()
    kept = [(p.key, p.value) for p in onnx_model.metadata_props if not p.key.startswith(PREFIX)]
    del onnx_model.metadata_props[:]
    for key, value in kept + sorted(props.items()):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    return onnx_model


def sidecar_path(path: str | Path) -> Path:
    """Where an engine's metadata lives: `<engine file>.json`."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: str | Path, info: ArtifactInfo) -> Path:
    """Write the `lix.*` props of an engine (which cannot hold them itself) to `<engine>.json`, atomically."""
    target = sidecar_path(engine_path)
    text = json.dumps(info.to_props(), indent=2, sort_keys=True) + "\n"
    with atomic_output(target) as tmp:
        tmp.write_text(text)
    return target


def read_metadata(path: str | Path) -> ArtifactInfo:
    """The ArtifactInfo of an ONNX file (its metadata_props) or an engine (its `<engine>.json` sidecar).

    Only the ONNX header is parsed (external weight files are not loaded).
    """
    path = Path(path)
    if path.suffix == SIDECAR_SUFFIX:
        return _read_sidecar(path)
    if not path.is_file():
        raise ArtifactNotFoundError(path, "artefact file not found")
    if path.suffix != ".onnx":
        return _read_sidecar(sidecar_path(path))
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except ImportError:
        raise ArtifactError(path, "reading ONNX metadata needs the onnx package (pip install lix-seg[deploy])") from None
    except Exception as err:  # onnx raises DecodeError and others for files that are not ONNX
        raise ArtifactError(path, f"not a readable ONNX file ({type(err).__name__}: {str(err)[:200]})") from None
    return ArtifactInfo.from_props({p.key: p.value for p in model.metadata_props}, path)


def _read_sidecar(path: Path) -> ArtifactInfo:
    if not path.is_file():
        raise ArtifactError(path, "metadata sidecar not found (an engine needs the <engine>.json written "
                                  "beside it by lix_deploy.build_engine)")
    try:
        props = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(path, f"unreadable metadata sidecar ({err})") from None
    if not isinstance(props, dict):
        raise ArtifactError(path, "metadata sidecar must be a JSON object of lix.* keys")
    as_text = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731  (hand-edited sidecars)
    return ArtifactInfo.from_props({str(k): as_text(v) for k, v in props.items()}, path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; renamed onto `path` if the block succeeds, deleted otherwise.

    The temp file lives in the target's directory, so the rename is atomic: readers see the old
    file or the complete new one, never a half-written artefact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it private; an artefact is an ordinary file
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
