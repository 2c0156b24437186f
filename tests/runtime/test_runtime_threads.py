"""A Segmenter driven from worker threads (as the ROS node does) gives the single-thread results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the [deploy] extra")

from lix_deploy.runtime import Segmenter  # noqa: E402

ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


def _frames(count: int = 12):
    """Random frames of varying size and encoding (noise: every pixel's class depends on its own colour)."""
    rng = np.random.default_rng(7)
    frames = []
    for i in range(count):
        encoding = ENCODINGS[i % len(ENCODINGS)]
        channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
        shape = (int(rng.integers(20, 70)), int(rng.integers(30, 90)))
        image = rng.integers(0, 256, shape + (channels,), dtype=np.uint8)
        frames.append((image[:, :, 0] if channels == 1 else image, encoding))
    return frames


def test_worker_thread_matches_the_calling_thread(segmenter):
    frames = _frames()
    reference = [segmenter.segment(image, encoding) for image, encoding in frames]
    results, errors = [], []

    def work():  # the ROS node's inference thread: one thread owns the calls
        try:
            results.extend(segmenter.segment(image, encoding) for image, encoding in frames)
        except Exception as err:  # surfaced below; an exception in a thread would otherwise vanish
            errors.append(err)

    worker = threading.Thread(target=work, name="inference")
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and not errors
    for got, want in zip(results, reference, strict=True):
        np.testing.assert_array_equal(got, want)


def test_two_threads_at_once_match_single_thread_results(segmenter):
    frames = _frames()
    reference = [segmenter.segment(image, encoding) for image, encoding in frames]
    before = segmenter.latency_stats()["count"]
    start = threading.Barrier(2)

    def work(order):
        start.wait(timeout=30)  # both threads segment at the same time
        return [(i, segmenter.segment(*frames[i])) for _ in range(3) for i in order]

    forward, backward = list(range(len(frames))), list(reversed(range(len(frames))))
    with ThreadPoolExecutor(2) as pool:
        outputs = [future.result(timeout=120) for future in [pool.submit(work, forward), pool.submit(work, backward)]]
    for output in outputs:
        for index, mask in output:
            np.testing.assert_array_equal(mask, reference[index])
    assert segmenter.latency_stats()["count"] == before + 2 * 3 * len(frames)
