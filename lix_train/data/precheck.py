"""Find a damaged frame of any split a run will read before the first training step, not after it.

A full decode of every frame costs as much as an epoch; this reads only each image file's header
and its last bytes: a missing, empty or truncated JPEG / PNG (no end marker), a file that is not
the image its name says, and partner images of one frame (RGB, depth, labels, disparity) of
different sizes. What only a decode finds (e.g. a label colour missing from colors.txt) is still
reported when the frame is read, one line naming the file. Sources without `frame_files` (their
files are not known up front) are not checked. build.check_splits checks the splits a run reads.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Sequence

from lix_train.data.errors import DatasetError
from lix_train.data.sources import FrameSubset

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SUFFIXES = (".jpg", ".jpeg")
HEAD_BYTES = 1 << 16  # a JPEG's frame header (SOF) follows its EXIF / tables, well within this
TAIL_BYTES = 1024
# JPEG start-of-frame markers carrying the size (C4 DHT, C8 JPG and CC DAC are not frames).
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _head_and_tail(path: Path) -> tuple[bytes, bytes]:
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            size = f.seek(0, 2)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except OSError as err:
        raise DatasetError(path, f"cannot read file ({err.strerror or err})") from None
    if not head:
        raise DatasetError(path, "file is empty")
    return head, tail


def _png_size(path: Path, head: bytes, tail: bytes) -> tuple[int, int]:
    if not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR" or len(head) < 24:
        raise DatasetError(path, "not a PNG file (no PNG signature and IHDR header)")
    if b"IEND" not in tail:
        raise DatasetError(path, "truncated PNG (no IEND chunk at the end)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def _jpeg_size(path: Path, head: bytes, tail: bytes) -> tuple[int, int]:
    if not head.startswith(b"\xff\xd8"):
        raise DatasetError(path, "not a JPEG file (no start-of-image marker)")
    if b"\xff\xd9" not in tail:
        raise DatasetError(path, "truncated JPEG (no end-of-image marker)")
    pos = 2
    while pos + 9 <= len(head):
        if head[pos] != 0xFF:
            raise DatasetError(path, f"corrupt JPEG header (no marker at byte {pos})")
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", head[pos + 2:pos + 4])[0]
        if marker in SOF_MARKERS:
            height, width = struct.unpack(">HH", head[pos + 5:pos + 9])
            return height, width
        pos += 2 + length
    raise DatasetError(path, f"corrupt JPEG header (no frame size in its first {HEAD_BYTES} bytes)")


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) from the header of a PNG / JPEG; None for other files (only checked to exist)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _png_size(path, *_head_and_tail(path))
    if suffix in JPEG_SUFFIXES:
        return _jpeg_size(path, *_head_and_tail(path))
    if not path.is_file():
        raise DatasetError(path, "file not found")
    return None


def check_frame_files(files: Sequence[Path]) -> None:
    """One frame's files: each readable and complete, and its images of one size (the first image's)."""
    first: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        size = image_size(path)
        if size is None:
            continue
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise DatasetError(path, f"image is {size[1]}x{size[0]} (WxH) but {first[0].name} is "
                                     f"{first[1][1]}x{first[1][0]}; expected both to have the same size")


def check_sources(sources: dict) -> int:
    """Header-check every frame of every split's source; returns the frames checked."""
    checked = 0
    for split, source in sources.items():
        files_of = getattr(source, "frame_files", None)
        if files_of is None:
            continue
        for index in range(len(source)):
            check_frame_files(files_of(index))
        checked += len(source)
    return checked


def drop_unreadable(source, split: str):
    """(source without the frames a header check finds bad, {frame name: error}) for on_error="skip".

    Dropping, not replacing, keeps every other frame once per epoch; the record goes to metrics.json.
    """
    dropped: dict[str, str] = {}
    files_of = getattr(source, "frame_files", None)
    if files_of is None:
        return source, dropped
    names = getattr(source, "names", None)
    keep = []
    for index in range(len(source)):
        try:
            check_frame_files(files_of(index))
            keep.append(index)
        except DatasetError as err:
            name = str(names[index]) if names is not None else f"#{index}"
            dropped[name] = str(err)
            log.warning("skipping frame %s of the %s split: %s", name, split, err)
    if not keep:
        raise DatasetError(None, f"all {len(source)} frames of the {split} split are unreadable "
                                 "(data.on_error skip); see the warnings above")
    return (FrameSubset(source, keep) if dropped else source), dropped
