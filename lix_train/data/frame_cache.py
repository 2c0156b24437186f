"""An exact on-disk cache of a split's decoded frames (RGB, labels, X), read back as memmap slices.

Why: on the embedded set a loader spends most of a sample decoding a JPEG, a colour-coded
label PNG and a 16-bit depth PNG, hashing the depth for the X cache and reading X, yet all of
that is the same every epoch: only the random transforms differ. This cache keeps each frame as
it stands *before* any transform (uint8 RGB, uint8 train ids, float32 X from the encoder), so a
loader reads a frame with three slices of page-cached memmaps and the transforms see exactly
the arrays the uncached path would have given them: items are bit-identical.

Layout, one folder per key under <cache_dir>/frames/:
    rgb.npy, label.npy, x.npy   1-D uint8 / uint8 / float32 arrays, every frame's C-order bytes
                                concatenated, so frames of different sizes (a ragged split) need
                                no special case;
    index.json                  key, source fingerprint, per-frame name, size and CRC32s, and
                                the DatasetError of frames that could not be read (on_error skip).
The key (the folder name) hashes the split's frame list, the source's identity and everything
X depends on; the fingerprint (sizes and mtimes of the frames' files, where the source names
them) is checked on open, so data edited in place is rebuilt, never served stale. The build
writes into a temporary folder renamed into place under a lock file: a second process waits and
uses the winner's cache. A folder that does not open cleanly is rebuilt; a frame whose CRC does
not match (checked on its first read in each process) is served uncached and the cache is
marked for rebuilding, so damaged bytes are never used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lix_train.data.errors import DatasetError
from lix_train.data.modalities import MODALITY_CHANNELS
from lix_train.data.transforms import Frame
from lix_train.data.x_cache import FORMAT_VERSION as X_FORMAT_VERSION
from lix_train.locking import exclusive

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the layout or what a frame holds changes
INDEX_FILE = "index.json"
ARRAYS = {"rgb": np.uint8, "label": np.uint8, "x": np.float32}
_HEADER_BYTES = 128  # fixed .npy header, written last, once the length is known


class FrameCacheError(DatasetError):
    """The cache cannot be written (disk full, read-only place): names the file and the way out."""


def cache_key(identity: dict) -> str:
    """Folder name: a digest of what the cached frames depend on (JSON of `identity`)."""
    blob = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def files_fingerprint(paths: Sequence[Path | str]) -> str:
    """Digest of the (path, size, mtime) of the files a split is read from (missing files count too)."""
    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        try:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}|missing\n".encode())
    return h.hexdigest()


class FrameCache:
    """Read side of one built cache: frame(i) -> a fresh Frame, None if that entry is damaged.

    The memmaps are opened on first use in each process and never pickled, so DataLoader
    workers each map the files themselves (one page cache, shared by all of them).
    """

    def __init__(self, directory: Path, index: dict, built: bool = False):
        self.directory = Path(directory)
        self.built = built  # whether this process wrote it (tests, logs)
        self.names: list[str] = list(index["names"])
        self.modality: str | None = index["modality"]
        self.channels = int(index["channels"])
        self.sizes = np.asarray(index["sizes"], np.int64).reshape(-1, 2)
        self.crc = np.asarray(index["crc"], np.int64).reshape(-1, 3)
        self.errors = {int(i): tuple(e) for i, e in index["errors"].items()}
        pixels = self.sizes[:, 0] * self.sizes[:, 1]
        self.offsets = np.concatenate([[0], np.cumsum(pixels)])
        self._arrays: dict[str, np.ndarray] | None = None
        self._verified = np.zeros(len(self.names), bool)
        self._damaged = False

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # each process maps the files itself and checks what it reads
        state["_verified"] = np.zeros(len(self.names), bool)
        return state

    @property
    def total_pixels(self) -> int:
        return int(self.offsets[-1])

    def frame(self, i: int) -> Frame | None:
        """Frame i as the uncached pipeline builds it; DatasetError for a frame recorded as bad."""
        if i in self.errors:
            path, problem = self.errors[i]
            raise DatasetError(path, problem)
        arrays = self._open()
        if arrays is None:
            return None
        (h, w), start, end = self.sizes[i], self.offsets[i], self.offsets[i + 1]
        try:
            rgb = np.array(arrays["rgb"][3 * start:3 * end]).reshape(h, w, 3)
            label = np.array(arrays["label"][start:end]).reshape(h, w)
            x = None
            if self.channels:
                x = np.array(arrays["x"][self.channels * start:self.channels * end]).reshape(self.channels, h, w)
        except (OSError, ValueError) as err:  # a file truncated under us (SIGBUS aside)
            self._mark_damaged(f"frame {self.names[i]}: {err}")
            return None
        if not self._verified[i]:
            got = (_crc(rgb), _crc(label), _crc(x) if x is not None else 0)
            if got != tuple(int(c) for c in self.crc[i]):
                self._mark_damaged(f"frame {self.names[i]} does not match its checksum")
                return None
            self._verified[i] = True
        return Frame(image=rgb, label=label, x=x, modality=self.modality if x is not None else None,
                     name=self.names[i])

    def _open(self) -> dict[str, np.ndarray] | None:
        if self._arrays is None and not self._damaged:
            try:
                self._arrays = _map_arrays(self.directory, self.total_pixels, self.channels)
            except (OSError, ValueError) as err:
                self._mark_damaged(str(err))
        return self._arrays

    def _mark_damaged(self, why: str) -> None:
        """Serve uncached from now on (in this process) and make the next run rebuild the cache."""
        if not self._damaged:
            log.warning("frame cache %s is damaged (%s): reading frames uncached, the next run rebuilds it",
                        self.directory, why)
        self._damaged = True
        self._arrays = None
        with contextlib.suppress(OSError):
            (self.directory / INDEX_FILE).unlink(missing_ok=True)


def _plain(identity: dict) -> dict:
    """`identity` as it reads back from JSON (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _map_arrays(directory: Path, pixels: int, channels: int) -> dict[str, np.ndarray]:
    """The three 1-D memmaps, checked for dtype and length (a truncated file is an error, not data)."""
    lengths = {"rgb": 3 * pixels, "label": pixels, "x": channels * pixels}
    out = {}
    for name, dtype in ARRAYS.items():
        path = directory / f"{name}.npy"
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.dtype != dtype or array.shape != (lengths[name],):
            raise ValueError(f"{path}: holds {array.dtype} {array.shape}, expected {np.dtype(dtype)} "
                             f"({lengths[name]},)")
        out[name] = array
    return out


def open_cache(directory: Path, identity: dict, fingerprint: str) -> tuple[FrameCache | None, str]:
    """The cache at `directory` if it is complete and current, else (None, why not)."""
    path = directory / INDEX_FILE
    if not directory.is_dir():
        return None, "absent"
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT_VERSION or index.get("identity") != _plain(identity):
            return None, f"{path} belongs to another format or key"
        if index.get("fingerprint") != fingerprint:
            return None, "the source files changed since it was built"
        cache = FrameCache(directory, index)
        if len(cache.names) != len(cache.sizes) or len(cache.names) != len(cache.crc):
            return None, f"{path} is inconsistent"
        _map_arrays(directory, cache.total_pixels, cache.channels)
    except FileNotFoundError as err:
        return None, f"{err.filename} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable ({err})"
    return cache, ""


def ensure_cache(directory: Path, identity: dict, fingerprint: str, count: int, modality: str | None,
                 load: Callable[[int], Frame], *, on_error: str = "raise", progress: bool = True,
                 what: str = "frames") -> FrameCache:
    """Open the cache at `directory`, building it first (once, under a lock) if it is absent or unusable.

    load(i) gives frame i exactly as the uncached pipeline does (before any transform). A
    DatasetError from it stops the build when on_error="raise"; with "skip" it is recorded and
    raised again when the frame is read, so the dataset's skipping behaves as without a cache.
    """
    cache, why = open_cache(directory, identity, fingerprint)
    if cache is not None:
        return cache
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(directory.parent / f"{directory.name}.lock"):
            cache, why = open_cache(directory, identity, fingerprint)  # another process built it while we waited
            if cache is not None:
                return cache
            if why != "absent":
                log.warning("frame cache %s: %s; rebuilding it", directory, why)
            for stale in directory.parent.glob(f".{directory.name}.*"):  # left by a killed build (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            index = _build(directory, identity, fingerprint, count, modality, load, on_error, progress, what)
    except OSError as err:  # the folder or its lock cannot be made (read-only place)
        raise FrameCacheError(err.filename or directory.parent, f"cannot create the frame cache ({err.strerror}); "
                              "set data.cache_dir to a writable place, or data.frame_cache false") from None
    return FrameCache(directory, index, built=True)


def _build(directory: Path, identity: dict, fingerprint: str, count: int, modality: str | None,
           load: Callable[[int], Frame], on_error: str, progress: bool, what: str) -> dict:
    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    names, sizes, crcs, errors = [], [], [], {}
    channels = MODALITY_CHANNELS[modality] if modality is not None else 0
    space_checked = False
    writers: dict[str, _NpyWriter] = {}
    try:
        for name, dtype in ARRAYS.items():
            writers[name] = _NpyWriter(tmp / f"{name}.npy", dtype)
        log.info("frame cache: decoding %d %s once into %s", count, what, directory)
        for i in tqdm(range(count), desc=f"frame cache ({what})", unit="frame", disable=not progress):
            try:
                frame = load(i)
            except DatasetError as err:
                if on_error == "raise":
                    raise
                errors[i] = (None if err.path is None else str(err.path), err.problem)
                names.append(f"#{i}")
                sizes.append((0, 0))
                crcs.append((0, 0, 0))
                continue
            _check_frame(frame, channels, modality)
            if not space_checked:
                _check_space(directory.parent, frame, count)
                space_checked = True
            names.append(frame.name)
            sizes.append(frame.size)
            parts = {"rgb": frame.image, "label": frame.label, "x": frame.x}
            crcs.append(tuple(_crc(parts[k]) if parts[k] is not None else 0 for k in ARRAYS))
            for name, writer in writers.items():
                if parts[name] is not None:
                    writer.append(parts[name])
        for writer in writers.values():
            writer.close()
        distinct = sorted({s for i, s in enumerate(sizes) if i not in errors})
        if len(distinct) > 1:
            log.info("frame cache: %s come in %d sizes (e.g. %s); stored ragged, each frame at its own size",
                     what, len(distinct), ", ".join(f"{h}x{w}" for h, w in distinct[:3]))
        index = {"format": FORMAT_VERSION, "identity": _plain(identity), "fingerprint": fingerprint,
                 "modality": modality, "channels": channels, "names": names,
                 "sizes": [list(map(int, s)) for s in sizes], "crc": [list(c) for c in crcs],
                 "errors": {str(i): list(e) for i, e in errors.items()}}
        (tmp / INDEX_FILE).write_text(json.dumps(index))
        _publish(tmp, directory)
    except OSError as err:
        _discard(tmp, writers)
        where = err.filename or tmp
        hint = "free some space" if err.errno == errno.ENOSPC else "make it writable"
        raise FrameCacheError(where, f"cannot write the frame cache ({err.strerror or err}); {hint} under "
                              f"{directory.parent}, or set data.frame_cache false") from None
    except BaseException:
        _discard(tmp, writers)
        raise
    return index


def _discard(tmp: Path, writers: dict) -> None:
    for writer in writers.values():
        writer.handle.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _check_frame(frame: Frame, channels: int, modality: str | None) -> None:
    """Every stored frame has the layout of the first: same dtypes, same X channels and modality."""
    ok = frame.image.dtype == np.uint8 and frame.label.dtype == np.uint8
    if frame.x is None:
        ok = ok and channels == 0
    else:
        ok = ok and frame.x.dtype == np.float32 and frame.x.shape[0] == channels and frame.modality == modality
    if not ok:
        raise DatasetError(frame.name, f"cannot cache this frame: image {frame.image.dtype}, label "
                           f"{frame.label.dtype}, x {None if frame.x is None else (frame.x.dtype, frame.x.shape)}; "
                           f"expected uint8, uint8 and {channels}-channel float32 {modality} X like the others")


def _check_space(where: Path, frame: Frame, count: int) -> None:
    """Fail before writing, naming the folder, when the split cannot fit on the disk."""
    per_frame = frame.image.nbytes + frame.label.nbytes + (0 if frame.x is None else frame.x.nbytes)
    need, free = per_frame * count, shutil.disk_usage(where).free
    if need > free:
        raise OSError(errno.ENOSPC, f"not enough disk space: about {need / 2**20:.0f} MiB needed for "
                      f"{count} frames, {free / 2**20:.0f} MiB free", str(where))


def _publish(tmp: Path, directory: Path) -> None:
    """Rename the finished folder into place, moving a stale or damaged one aside first."""
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
        os.replace(directory, old / "cache")  # readers that mapped it keep their (unlinked) files
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, directory)


class _NpyWriter:
    """Appends arrays' bytes to a 1-D .npy whose header is written last, once the length is known."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self.handle = open(path, "wb")
        self.handle.write(b"\0" * _HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        try:
            self.handle.write(memoryview(array).cast("B"))
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from None
        self.length += array.size

    def close(self) -> None:
        try:
            self.handle.seek(0)
            self.handle.write(_npy_header(self.dtype, self.length))
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from None
        finally:
            self.handle.close()


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version-1.0 .npy header for a 1-D array, padded to exactly _HEADER_BYTES."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
    body = text.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    assert pad >= 0, text
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) + body + b" " * pad + b"\n"


def dataset_files(source) -> list[Path]:
    """Every file a source's frames are read from, in order without repeats; [] if it does not say."""
    files = getattr(source, "frame_files", None)
    if files is None:
        return []
    return list(dict.fromkeys(p for i in range(len(source)) for p in files(i)))


def cache_dataset_frames(dataset, root: Path, identity: dict, *, progress: bool = True,
                         what: str = "frames") -> FrameCache:
    """Build (once) or open the frame cache of a SegmentationDataset under `root` and attach it.

    `identity` names the data (dataset, root, source options); the split's frame names and
    everything X depends on are added here, so a changed frame list or X setting gets a new key.
    """
    source = dataset.source
    names = [str(n) for n in getattr(source, "names", range(len(source)))]
    key = {"identity": identity, "x_format": X_FORMAT_VERSION, "modality": dataset.modality,
           "max_depth": dataset.max_depth, "baseline_m": dataset.baseline_m, "on_error": dataset.on_error,
           "names": hashlib.blake2b("\n".join(names).encode(), digest_size=16).hexdigest(), "count": len(names)}
    directory = Path(root) / cache_key(key)
    fingerprint = files_fingerprint(dataset_files(source))
    cache = ensure_cache(directory, key, fingerprint, len(source), dataset.modality,
                         lambda i: dataset.frame(source[i]), on_error=dataset.on_error, progress=progress,
                         what=what)
    dataset.frame_cache = cache
    return cache
