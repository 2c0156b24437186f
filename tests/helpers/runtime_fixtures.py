"""A tiny LIX-convention ONNX model built with onnx.helper, so runtime tests need neither torch nor the exporter.

The graph is a 1x1 Conv whose five class scores are linear in the pixel's colour, then ArgMax
and Cast to uint8 ("labels"), optionally also returning the scores ("logits"):

    0 red    R - G          1 green  G - R          2 blue   B - (R + G) / 2
    3 bright mean - 128     4 dark   128 - mean

so a test can predict every pixel's class from its colour (`expected_labels`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = ["red", "green", "blue", "bright", "dark"]
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [40, 40, 40]]
WEIGHTS = np.array([[1, -1, 0], [-1, 1, 0], [-0.5, -0.5, 1], [1 / 3, 1 / 3, 1 / 3], [-1 / 3, -1 / 3, -1 / 3]],
                   np.float32)
BIAS = np.array([0, 0, 0, -128, 128], np.float32)
SIZE = (32, 48)  # model input (H, W)


def make_tiny_onnx(path: str | Path, size: tuple[int, int] = SIZE, dynamic_batch: bool = False,
                   with_logits: bool = False, metadata: bool = True) -> Path:
    """Write the tiny model to `path` (opset 18, LIX metadata unless metadata=False)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lix_deploy.artifact import ArtifactInfo, write_metadata

    height, width = size
    batch = "N" if dynamic_batch else 1
    nodes = [
        helper.make_node("Conv", ["image", "weight", "bias"], ["scores"], kernel_shape=[1, 1]),
        helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [batch, height, width])]
    if with_logits:
        nodes.append(helper.make_node("Identity", ["scores"], ["logits"]))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5, height, width]))
    graph = helper.make_graph(
        nodes, "tiny_lix",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, height, width])],
        outputs,
        initializer=[numpy_helper.from_array(WEIGHTS.reshape(5, 3, 1, 1), "weight"),
                     numpy_helper.from_array(BIAS, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    if metadata:
        write_metadata(model, ArtifactInfo(
            class_names=CLASS_NAMES, palette=PALETTE, input_size=size, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
            outputs=["labels", "logits"] if with_logits else ["labels"], dynamic_batch=dynamic_batch,
            dataset="tiny-test"))
    path = Path(path)
    onnx.save(model, str(path))
    return path


def expected_labels(rgb: np.ndarray) -> np.ndarray:
    """What the tiny model predicts for an (..., 3) RGB float/uint8 array (argmax of the linear scores)."""
    scores = np.asarray(rgb, np.float32) @ WEIGHTS.T + BIAS
    return scores.argmax(-1).astype(np.uint8)


def scene(height: int = 64, width: int = 96) -> np.ndarray:
    """An rgb8 test scene of flat colour blocks, one per class, so resizing keeps block interiors exact."""
    image = np.zeros((height, width, 3), np.uint8)
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (230, 230, 230), (20, 20, 20), (200, 60, 40)]
    cols = np.array_split(np.arange(width), 3)
    rows = np.array_split(np.arange(height), 2)
    for index, colour in enumerate(colours):
        r, c = rows[index // 3], cols[index % 3]
        image[r[0]:r[-1] + 1, c[0]:c[-1] + 1] = colour
    return image


def gray_scene(height: int = 64, width: int = 96) -> np.ndarray:
    """An (H, W) mono8 scene: a dark left half and a bright right half, with a mid-gray band."""
    image = np.full((height, width), 30, np.uint8)
    image[:, width // 2:] = 220
    image[height // 3: height // 2] = 90
    return image

