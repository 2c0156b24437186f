"""The vehicle's own recordings as frame sources: a rosbag2 camera topic, a folder of images, a video.

INT8 is calibrated and gated on what the car's camera sees, not on frames of another domain, so
`python -m lix_deploy.calib --bag / --images / --video` reads a team's own drive. Torch-free.

A `Recording` lists its frames in time order (stamps in nanoseconds) without decoding them; a
frame's pixels are decoded only when the selection asks for them. `spread_frames` chooses the
frames: targets evenly spread over the drive's time (or over a `span` of it, e.g. the first 70 %
for calibration and the rest for the gate), at least `min_gap` apart, and a candidate that
hardly differs from the last frame kept (a car waiting at a light) is skipped, so the set covers
the drive rather than its first seconds or its stops.

Time axis: a bag's receive times; a video's frame times (its fps); an image folder has no clock,
so its files, in name order, count as one second apart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lix_deploy.runtime.preprocess import decode_compressed, image_from_buffer, to_rgb

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
THUMBNAIL = (32, 24)  # (width, height) of the grey thumbnail compared for near-duplicates
SECOND_NS = 10**9


class RecordingError(ValueError):
    """A recording that cannot be read as asked; the message names the file or topic."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Recording:
    """One camera's frames in time order; `load(i)` decodes frame i to RGB (H, W, 3) uint8."""

    kind: str  # "bag", "images" or "video"
    path: Path
    stamps_ns: list[int]
    names: list[str]  # where each frame comes from (topic@stamp, a file, video#index)
    load: Callable[[int], np.ndarray]
    topic: str | None = None
    msgtype: str | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What the manifest records of the source."""
        out = {"kind": self.kind, "path": str(self.path.resolve()), "frames": len(self.stamps_ns),
               "duration_s": (self.stamps_ns[-1] - self.stamps_ns[0]) / SECOND_NS if self.stamps_ns else 0.0}
        if self.topic is not None:
            out.update(topic=self.topic, msgtype=self.msgtype)
        return {**out, **self.extra}


# --------------------------------------------------------------------------- choosing frames (pure)


def spread_targets(stamps_ns: Sequence[int], num: int, span: tuple[float, float] = (0.0, 1.0)
                   ) -> tuple[list[float], float, float, float]:
    """(`num` target times evenly spread over the span, their spacing, the span's start and end in ns).

    `span` is a pair of fractions of the recording's duration, 0 <= start < end <= 1; the first target
    is the span's start, the last its end (one target: the start, spacing = the span's length).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    start, end = span
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"span {start}:{end} must satisfy 0 <= start < end <= 1")
    first, last = stamps_ns[0], stamps_ns[-1]
    lo, hi = first + start * (last - first), first + end * (last - first)
    spacing = (hi - lo) / (num - 1) if num > 1 else (hi - lo)
    return [lo + k * spacing for k in range(num)], spacing, lo, hi


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A small grey float image of a frame, for the near-duplicate test."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)


def near_duplicate(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """Mean absolute difference of two thumbnails (grey levels 0..255) below `threshold` (0: never)."""
    return threshold > 0 and float(np.abs(a - b).mean()) < threshold


@dataclass
class Selection:
    """The frames chosen and what the choice skipped."""

    indices: list[int]
    frames: list[np.ndarray]
    near_duplicates: int = 0  # candidates skipped as near-duplicates of the frame kept before
    decoded: int = 0


def spread_frames(recording: Recording, num: int, *, min_gap_s: float = 0.0, dedup: float = 3.0,
                  span: tuple[float, float] = (0.0, 1.0)) -> Selection:
    """Up to `num` frames spread over the recording's time (see the module docstring), in time order.

    Frames inside the span only (the span is half-open, [start, end), except that the recording's last
    frame belongs to a span ending at 1), so a calibration span and a gate span never share a frame.
    Each target's candidate is the frame nearest to it; one closer than `min_gap_s` to the last frame
    kept, or whose thumbnail differs from the last kept one by less than `dedup` grey levels on average,
    gives way to the frames after it, up to the next target's. Fewer than `num` frames come back when
    the span holds fewer frames, is too short for the gap, or the drive is one long stop.
    """
    stamps = recording.stamps_ns
    if not stamps:
        raise RecordingError(recording.path, "holds no frames")
    targets, _, lo, hi = spread_targets(stamps, num, span)
    inside = [i for i, t in enumerate(stamps) if lo <= t < hi or (span[1] == 1.0 and t == hi)]
    chosen = Selection([], [])
    if not inside:
        return chosen
    first, stop = inside[0], inside[-1] + 1
    nearest = [min(range(max(first, bisect.bisect_left(stamps, t) - 1), min(stop, bisect.bisect_left(stamps, t) + 1)),
                   key=lambda i: abs(stamps[i] - t)) for t in targets]
    min_gap = int(round(min_gap_s * SECOND_NS))
    last_index, last_stamp, last_thumb = first - 1, None, None
    for k, start in enumerate(nearest):
        end = nearest[k + 1] if k + 1 < len(nearest) else stop
        for index in range(max(start, last_index + 1), max(end, start + 1)):
            if last_stamp is not None and stamps[index] - last_stamp < min_gap:
                continue
            rgb = recording.load(index)
            chosen.decoded += 1
            thumb = thumbnail(rgb)
            if last_thumb is not None and near_duplicate(thumb, last_thumb, dedup):
                chosen.near_duplicates += 1
                last_index = index  # never decoded twice
                continue
            chosen.indices.append(index)
            chosen.frames.append(rgb)
            last_index, last_stamp, last_thumb = index, stamps[index], thumb
            break
    return chosen


# --------------------------------------------------------------------------- the three sources


def open_images(folder: str | Path) -> Recording:
    """Every .jpg / .jpeg / .png under `folder` (recursively), in path order, one second apart."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise RecordingError(folder, "image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RecordingError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder or below it")
    sizes: dict[tuple[int, int], Path] = {}

    def load(i: int) -> np.ndarray:
        image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise RecordingError(files[i], "cannot be decoded as an image")
        size = image.shape[:2]
        sizes.setdefault(size, files[i])
        if len(sizes) > 1:
            (first_size, first), = [(s, p) for s, p in sizes.items() if s != size][:1]
            raise RecordingError(files[i], f"is {size[1]}x{size[0]} but {first} is {first_size[1]}x{first_size[0]}: "
                                           "the images must come from one camera (one size)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    return Recording("images", folder, [i * SECOND_NS for i in range(len(files))],
                     [p.relative_to(folder).as_posix() for p in files], load)


def open_video(path: str | Path) -> Recording:
    """A video file readable by OpenCV; frame times from its frame rate (25 fps when it has none)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise RecordingError(path, "video file not found")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise RecordingError(path, "OpenCV cannot open it as a video (unknown container or codec)")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if fps > 0 and math.isfinite(fps) else 25.0
        count = 0
        while capture.grab():  # the container's frame count is often wrong: count what decodes
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise RecordingError(path, "holds no decodable frames")
    reader = _SequentialVideo(path)
    return Recording("video", path, [int(round(i * SECOND_NS / fps)) for i in range(count)],
                     [f"{path.name}#{i}" for i in range(count)], reader.frame, extra={"fps": fps})


class _SequentialVideo:
    """Frames of a video read forward (a selection asks in time order), seeking only to go back."""

    def __init__(self, path: Path):
        self.path, self.capture, self.position = path, None, 0

    def frame(self, index: int) -> np.ndarray:
        import cv2

        if self.capture is None or index < self.position:
            if self.capture is not None:
                self.capture.release()
            self.capture, self.position = cv2.VideoCapture(str(self.path)), 0
        while self.position < index:
            if not self.capture.grab():
                raise RecordingError(self.path, f"frame {index} cannot be read (the file ends at {self.position})")
            self.position += 1
        ok, image = self.capture.read()
        if not ok or image is None:
            raise RecordingError(self.path, f"frame {index} cannot be decoded")
        self.position += 1
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def open_bag(path: str | Path, topic: str | None = None) -> Recording:
    """The camera topic of a rosbag2 bag (sqlite3 or MCAP): sensor_msgs/Image or CompressedImage.

    Without `topic`, the bag's only image topic. The frames' raw messages are held in memory and
    deserialized only when decoded (a few hundred MB for a long drive of compressed images).
    """
    from lix_deploy.bag import rosbags_modules

    Reader, _, _, typestore = rosbags_modules()
    path = Path(path)
    if not path.exists():
        raise RecordingError(path, "bag not found")
    raws: list[bytes] = []
    stamps: list[int] = []
    try:
        with Reader(path) as reader:
            chosen = pick_image_topic(path, reader.connections, topic)
            connections = [c for c in reader.connections if c.topic == chosen]
            msgtype = connections[0].msgtype
            for _, stamp, raw in reader.messages(connections=connections):
                stamps.append(int(stamp))
                raws.append(bytes(raw))
    except RecordingError:
        raise
    except Exception as err:  # rosbags raises its own errors (and sqlite3 / mcap ones) for a broken bag
        raise RecordingError(path, f"cannot be read as a rosbag2 bag ({type(err).__name__}: {err})") from None
    if not raws:
        raise RecordingError(path, f"topic {chosen!r} holds no messages")
    order = sorted(range(len(stamps)), key=stamps.__getitem__)
    stamps, raws = [stamps[i] for i in order], [raws[i] for i in order]

    def load(i: int) -> np.ndarray:
        try:
            msg = typestore.deserialize_cdr(raws[i], msgtype)
            image, encoding = decode_message(msg, msgtype)
        except Exception as err:  # a corrupt message: name it, never a traceback
            raise RecordingError(path, f"{chosen} message at {stamps[i]} ns cannot be decoded ({err})") from None
        return np.ascontiguousarray(to_rgb(image, encoding))

    return Recording("bag", path, stamps, [f"{chosen}@{s}" for s in stamps], load, topic=chosen, msgtype=msgtype)


def pick_image_topic(path: Path, connections, topic: str | None) -> str:
    """`topic` if it is an image topic of the bag, else its only image topic; RecordingError naming them otherwise."""
    images = sorted({c.topic for c in connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)})
    if topic is not None:
        if topic not in images:
            raise RecordingError(path, f"no image topic {topic!r}; image topics in the bag: {', '.join(images) or 'none'}")
        return topic
    if len(images) != 1:
        raise RecordingError(path, f"{'no image topic' if not images else 'several image topics'} "
                                   f"({', '.join(images) or 'none'}): choose one with --topic")
    return images[0]


def decode_message(msg, msgtype: str) -> tuple[np.ndarray, str]:
    """A deserialized Image or CompressedImage -> (H, W, C) uint8 view and its encoding.

    Raises ValueError naming the problem (unsupported encoding, bad step, undecodable data).
    """
    from lix_deploy.runtime.preprocess import ENCODINGS

    if msgtype == COMPRESSED_TYPE:
        return decode_compressed(np.asarray(msg.data, np.uint8), str(msg.format))
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {msg.encoding!r}")
    data = np.asarray(msg.data, np.uint8)
    if data.size != msg.step * msg.height:
        raise ValueError(f"data has {data.size} bytes, step * height = {msg.step * msg.height}")
    return image_from_buffer(data, msg.height, msg.width, msg.step, msg.encoding), msg.encoding


def open_recording(*, bag: str | Path | None = None, topic: str | None = None, images: str | Path | None = None,
                   video: str | Path | None = None) -> Recording:
    """The one recording named (exactly one of bag, images, video)."""
    given = [name for name, value in (("bag", bag), ("images", images), ("video", video)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"name exactly one recording (bag, images or video), got {given or 'none'}")
    if topic is not None and bag is None:
        raise ValueError("a topic applies to a bag only")
    if bag is not None:
        return open_bag(bag, topic)
    return open_images(images) if images is not None else open_video(video)

