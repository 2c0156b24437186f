"""Checked readers for the on-disk formats of the supported datasets.

Every reader either returns an array in the project's conventions (RGB uint8, depth float32 metres
with 0 = unknown, label train ids uint8) or raises one DatasetError that names the file and what
was expected: a missing file, bytes that do not decode, the wrong dtype, channel count or size.
Loaders call only these, so a bad file is reported the same way whichever dataset it belongs to.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lix_train.data.errors import DatasetError
from lix_train.data.sample import intrinsics_matrix

Shape = tuple[int, int]

# Depth files a user can supply: format name -> metres per stored unit (None: float metres as stored).
DEPTH_FORMATS: dict[str, float | None] = {
    "png_mm": 1e-3,  # uint16 PNG, millimetres, 0 = unknown
    "png_256": 1.0 / 256.0,  # uint16 PNG, metres * 256, 0 = unknown (KITTI depth benchmark)
    "npy": None,  # float .npy, metres; non-finite or <= 0 = unknown
}
# Disparity files: format name -> pixels per stored unit (None: float pixels as stored).
DISPARITY_FORMATS: dict[str, float | None] = {
    "png_256": 1.0 / 256.0,  # uint16 PNG, pixels * 256, 0 = invalid (KITTI disparity convention)
    "npy": None,  # float .npy, pixels; non-finite or <= 0 = invalid
}
FORMAT_SUFFIX = {"png_mm": ".png", "png_256": ".png", "npy": ".npy"}


# --------------------------------------------------------------------------- low-level decoding


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise DatasetError(p, "file not found")
    if not p.is_file():
        raise DatasetError(p, "expected a file, found a directory")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DatasetError(p, f"cannot read file ({exc.strerror})") from exc
    if not data:
        raise DatasetError(p, "file is empty")
    return data


def _decode_image(path: str | Path, what: str) -> np.ndarray:
    """Decode an image file as stored (no channel or depth conversion)."""
    buf = np.frombuffer(_read_bytes(path), np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise DatasetError(path, f"cannot decode image (corrupt or not an image file); expected {what}")
    return img


def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else img.shape[2]


def _check_shape(path: str | Path, img: np.ndarray, expected_shape: Shape | None, against: str) -> None:
    if expected_shape is not None and img.shape[:2] != tuple(expected_shape):
        h, w = img.shape[:2]
        eh, ew = expected_shape
        raise DatasetError(
            path, f"image is {w}x{h} (WxH) but {against} is {ew}x{eh}; expected both to have the same size"
        )


def read_uint16_png(path: str | Path, expected_shape: Shape | None = None, what: str = "a uint16 PNG") -> np.ndarray:
    """A single-channel 16-bit PNG as stored (uint16, HxW)."""
    img = _decode_image(path, what)
    if img.dtype != np.uint16:
        raise DatasetError(path, f"image is {img.dtype} ({8 * img.dtype.itemsize}-bit); expected {what}")
    if _channels(img) != 1:
        raise DatasetError(path, f"image has {_channels(img)} channels; expected {what} with 1 channel")
    _check_shape(path, img, expected_shape, "the RGB image")
    return img


# --------------------------------------------------------------------------- images and labels


def read_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit colour image (JPEG / PNG) as (H, W, 3) uint8 in RGB order."""
    what = "an 8-bit 3-channel colour image"
    img = _decode_image(path, what)
    if img.dtype != np.uint8:
        raise DatasetError(path, f"image is {img.dtype}; expected {what}")
    if _channels(img) != 3:
        raise DatasetError(path, f"image has {_channels(img)} channel(s); expected {what}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _color_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_color_label(
    path: str | Path,
    color_table: Mapping[tuple[int, int, int], int],
    expected_shape: Shape | None = None,
    table_name: str = "the colour table",
) -> np.ndarray:
    """A colour-coded class mask (lossless PNG, RGB colours) -> (H, W) uint8 train ids.

    color_table maps (r, g, b) -> train id (IGNORE_INDEX allowed). A pixel whose colour is not in
    the table is an error naming the colours and pixel counts: silently ignoring it would hide a
    wrong colors.txt or a lossy re-encoded mask.
    """
    what = "an 8-bit 3-channel colour-coded label PNG"
    img = _decode_image(path, what)
    if img.dtype != np.uint8 or _channels(img) != 3:
        raise DatasetError(path, f"image is {img.dtype} with {_channels(img)} channel(s); expected {what}")
    _check_shape(path, img, expected_shape, "the RGB image")
    if not color_table:
        raise DatasetError(path, f"{table_name} is empty; cannot map label colours")
    table_keys = _color_keys(np.asarray(list(color_table.keys()), np.uint8))
    order = np.argsort(table_keys)
    table_keys = table_keys[order]
    table_ids = np.asarray(list(color_table.values()), np.uint8)[order]

    keys = _color_keys(img[..., ::-1])
    pos = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
    known = table_keys[pos] == keys
    if not known.all():
        values, counts = np.unique(keys[~known], return_counts=True)
        top = np.argsort(-counts)[:5]
        listed = ", ".join(
            f"({v >> 16}, {(v >> 8) & 255}, {v & 255}) x {c} px" for v, c in zip(values[top], counts[top])
        )
        more = f" and {len(values) - len(top)} more" if len(values) > len(top) else ""
        raise DatasetError(
            path,
            f"{int((~known).sum())} pixels have {len(values)} colour(s) not in {table_name}: {listed}{more}; "
            "expected every label colour to be listed there",
        )
    return table_ids[pos]


def read_id_label(path: str | Path, lut: np.ndarray, expected_shape: Shape | None = None) -> np.ndarray:
    """A single-channel uint8 PNG of dataset label ids -> (H, W) uint8 train ids via a (256,) lut."""
    what = "a single-channel 8-bit PNG of label ids"
    img = _decode_image(path, what)
    if img.dtype != np.uint8:
        raise DatasetError(path, f"image is {img.dtype}; expected {what}")
    if _channels(img) != 1:
        raise DatasetError(path, f"image has {_channels(img)} channels (a colour-coded mask?); expected {what}")
    _check_shape(path, img, expected_shape, "the RGB image")
    return np.asarray(lut, np.uint8)[img]


# --------------------------------------------------------------------------- depth and disparity


def read_depth_cm_png(path: str | Path, expected_shape: Shape | None = None) -> np.ndarray:
    """vKITTI2 depth: uint16 PNG in centimetres -> float32 metres (0 stays 0 = unknown).

    Sky is stored as 65535 and stays a real, far value (655.35 m), as the dataset intends.
    """
    raw = read_uint16_png(path, expected_shape, "a uint16 depth PNG in centimetres")
    return raw.astype(np.float32) / np.float32(100.0)


def _read_float_npy(path: str | Path, expected_shape: Shape | None, what: str) -> np.ndarray:
    p = Path(path)
    _read_bytes(p)  # uniform not-found / empty errors
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(p, f"cannot read .npy ({exc}); expected {what}") from exc
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(p, f"array is {getattr(arr, 'dtype', type(arr))}; expected {what}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DatasetError(p, f"array has shape {arr.shape}; expected {what} of shape (H, W)")
    _check_shape(p, arr, expected_shape, "the RGB image")
    out = arr.astype(np.float32)
    out[~np.isfinite(out) | (out <= 0)] = 0.0
    return out


@dataclass(frozen=True)
class FloatMapKind:
    """What a user-supplied float map holds: the option naming its format, the formats, what each means."""

    option: str  # the config key that names the format (in errors)
    formats: Mapping[str, float | None]  # format name -> units per stored unit (None: float .npy as stored)
    npy_what: str  # a float .npy of this kind, for errors
    png_what: str  # a uint16 PNG of this kind, for errors; "{fmt}" is the format's name


DEPTH_MAP = FloatMapKind("depth_format", DEPTH_FORMATS, "float depth in metres", "a uint16 depth PNG ({fmt})")
DISPARITY_MAP = FloatMapKind("disparity_format", DISPARITY_FORMATS, "float disparity in pixels",
                             "a uint16 KITTI disparity PNG (pixels * 256)")


def read_float_map(path: str | Path, fmt: str, kind: FloatMapKind, expected_shape: Shape | None = None) -> np.ndarray:
    """A user-supplied map of `kind` (DEPTH_MAP: metres, DISPARITY_MAP: pixels) in one of its formats ->
    float32 in those units, 0 = unknown / invalid."""
    if fmt not in kind.formats:
        raise ValueError(f"{kind.option} {fmt!r} is not one of {sorted(kind.formats)}")
    scale = kind.formats[fmt]
    if scale is None:
        return _read_float_npy(path, expected_shape, kind.npy_what)
    raw = read_uint16_png(path, expected_shape, kind.png_what.format(fmt=fmt))
    return raw.astype(np.float32) * np.float32(scale)


def write_png_atomic(path: str | Path, image: np.ndarray) -> None:
    """Write a PNG via a temp file in the same directory + os.replace, so readers never see half a file."""
    p = Path(path)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{p}: OpenCV could not encode a {image.dtype} {image.shape} array as PNG")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- text files


def read_text_lines(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a UTF-8 text file."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(path, "not a text file (cannot decode as UTF-8)") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_colors_txt(path: str | Path) -> list[tuple[str, tuple[int, int, int]]]:
    """vKITTI2 colors.txt ("Category r g b" header, then "Terrain 210 0 200" ...) in file order."""
    expected = 'lines "<name> <r> <g> <b>" with 0 <= r, g, b <= 255 after a "Category r g b" header'
    entries: list[tuple[str, tuple[int, int, int]]] = []
    for n, line in read_text_lines(path):
        parts = line.rsplit(maxsplit=3)
        if not entries and parts[0].lower().startswith("category"):
            continue
        try:
            if len(parts) != 4:
                raise ValueError
            rgb = tuple(int(v) for v in parts[1:])
            if not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            raise DatasetError(path, f"line {n} {line!r} is malformed; expected {expected}") from None
        entries.append((parts[0], rgb))  # type: ignore[arg-type]
    if not entries:
        raise DatasetError(path, f"no categories found; expected {expected}")
    names = [name for name, _ in entries]
    colors = [c for _, c in entries]
    for label, values in (("category", names), ("colour", colors)):
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise DatasetError(path, f"duplicate {label}(s) {', '.join(dupes)}; expected each to appear once")
    return entries


def read_vkitti2_intrinsics(path: str | Path) -> dict[tuple[int, int], np.ndarray]:
    """vKITTI2 intrinsic.txt -> {(frame, camera index): 3x3 K}.

    Format: header "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]", then one row per frame and camera,
    e.g. "0 0 725.0087 725.0087 620.5 187.0".
    """
    expected = 'rows "<frame> <cameraID> <fx> <fy> <cx> <cy>" after a "frame cameraID ..." header'
    out: dict[tuple[int, int], np.ndarray] = {}
    for n, line in read_text_lines(path):
        parts = line.split()
        if not out and parts[0].lower() == "frame":
            continue
        try:
            if len(parts) != 6:
                raise ValueError
            frame, camera = int(parts[0]), int(parts[1])
            fx, fy, cx, cy = (float(v) for v in parts[2:])
        except ValueError:
            raise DatasetError(path, f"line {n} {line!r} is malformed; expected {expected}") from None
        out[(frame, camera)] = intrinsics_matrix(fx, fy, cx, cy)
    if not out:
        raise DatasetError(path, f"no intrinsics found; expected {expected}")
    return out


# --------------------------------------------------------------------------- directory listing


def list_dir(directory: str | Path, what: str) -> list[str]:
    """File names in a directory, read once (os.scandir); a missing directory is a DatasetError."""
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(d, f"directory not found; expected {what}")
    with os.scandir(d) as it:
        return sorted(e.name for e in it if e.is_file())


def subdirs(directory: str | Path) -> list[str]:
    """Names of the sub-directories of a directory (empty if it does not exist)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    with os.scandir(d) as it:
        return sorted(e.name for e in it if e.is_dir())


def index_by_stem(directory: str | Path, suffixes: Iterable[str], what: str) -> dict[str, Path]:
    """{file stem: path} for the files under a directory (recursively) with one of the suffixes.

    Walks the tree once. Two files with the same stem are an error: matching by stem would be
    ambiguous.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(d, f"directory not found; expected {what}")
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Path] = {}
    for dirpath, _, files in os.walk(d):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in suffixes:
                continue
            path = Path(dirpath) / name
            if stem in found:
                raise DatasetError(path, f"same file stem as {found[stem]}; expected one file per stem under {d}")
            found[stem] = path
    return found


# --------------------------------------------------------------------------- bad-input policy

ON_ERROR_CHOICES = ("raise", "skip")


class BadInputPolicy:
    """What a source does with a bad frame found while indexing.

    "raise" (default) raises the DatasetError; "skip" logs it (one warning per bad file), counts
    it in `skipped` and lets the source drop the frame.
    """

    def __init__(self, on_error: str, logger: logging.Logger):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        self.skipped = 0
        self.problems: list[str] = []  # each skipped frame's error, for the run's record (metrics.json)
        self._logger = logger

    def handle(self, error: DatasetError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped += 1
        self.problems.append(str(error))
        self._logger.warning("skipping frame: %s", error)


class SkipsWhileIndexing:
    """What a source that indexes through a BadInputPolicy (`self._policy`) reports of the frames it dropped."""

    _policy: BadInputPolicy

    @property
    def skipped(self) -> int:
        """Frames dropped while indexing (on_error="skip")."""
        return self._policy.skipped

    @property
    def skipped_frames(self) -> dict[str, str]:
        """What was dropped while indexing (on_error="skip"): file -> the error."""
        return {problem.split(": ", 1)[0]: problem for problem in self._policy.problems}
