"""sensor_msgs/Image <-> numpy, honouring `step` row padding, and sensor_msgs/CompressedImage -> numpy.
No cv_bridge (not on PyPI for ROS 2).

`image_to_array` reads any object with the Image fields (an rclpy message, or a rosbags one),
checks it the way a driver bug shows up on a robot (unknown encoding, a `step` that does not
fit, no pixels, truncated data) and raises `ImageRejected` naming the problem, so the node can
log and skip the frame instead of crashing. `compressed_to_array` decodes a CompressedImage (JPEG,
PNG) with the runtime's one decoder and rejects a corrupt or truncated one the same way.
"""

from __future__ import annotations

import array
import sys

import numpy as np

from lix_deploy.runtime.preprocess import ENCODINGS, decode_compressed, image_from_buffer

__all__ = ["SUPPORTED_ENCODINGS", "ImageRejected", "image_to_array", "compressed_to_array", "array_to_image",
           "mask_encoding"]

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(ENCODINGS)
_OUTPUT_CHANNELS = {"mono8": (1, np.uint8), "mono16": (1, np.uint16), "rgb8": (3, np.uint8), "bgr8": (3, np.uint8)}


class ImageRejected(ValueError):
    """An incoming image the node cannot segment; the message says why."""


def image_to_array(msg) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 view of `msg.data` (no copy; padded rows skipped) and its encoding.

    Raises ImageRejected for an unsupported encoding, an empty image, a `step` shorter than a
    row, or data whose length is not `step * height`.
    """
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ImageRejected(f"unsupported encoding {encoding!r}: expected one of {', '.join(SUPPORTED_ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageRejected(f"empty image ({width}x{height})")
    row_bytes = width * ENCODINGS[encoding].channels
    if step < row_bytes:
        raise ImageRejected(f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageRejected(f"data has {data.size} bytes, expected step * height = {step} * {height} = {step * height}")
    return image_from_buffer(data, height, width, step, encoding), encoding


def compressed_to_array(msg) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 pixels of a CompressedImage and their encoding (bgr8 / bgra8 / mono8, as OpenCV decodes).

    Raises ImageRejected for an empty, corrupt or truncated payload, or one that is not 8-bit.
    """
    try:
        return decode_compressed(msg.data, str(msg.format))
    except ValueError as err:
        raise ImageRejected(str(err)) from None


def mask_encoding(num_classes: int) -> str:
    """mono8 holds class ids up to 255; more classes need mono16 (the ROS segmentation convention)."""
    return "mono8" if num_classes <= 256 else "mono16"


def array_to_image(image: np.ndarray, encoding: str, header=None):
    """A sensor_msgs/Image of `image` (H, W) or (H, W, C), unpadded rows, with `header` (copied as given)."""
    from sensor_msgs.msg import Image

    if encoding not in _OUTPUT_CHANNELS:
        raise ValueError(f"cannot publish encoding {encoding!r}: expected one of {', '.join(_OUTPUT_CHANNELS)}")
    channels, dtype = _OUTPUT_CHANNELS[encoding]
    image = np.ascontiguousarray(image, dtype=dtype)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels or image.size == 0:
        shape = "(H, W, 3)" if channels == 3 else "(H, W)"
        raise ValueError(f"{encoding} needs a non-empty {shape} array, got {image.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(image.dtype.itemsize > 1 and sys.byteorder == "big")
    msg.step = int(image.shape[1] * channels * image.dtype.itemsize)
    # One copy, numpy buffer -> array.array (rclpy's type for uint8[], no per-byte check). The old
    # array.array("B", image.tobytes()) copied twice through a fresh bytes object: 0.33 ms per
    # 640x480 mask against 0.007 ms, measured on the CI machine.
    data = array.array("B")
    data.frombytes(memoryview(image).cast("B"))
    msg.data = data
    return msg
