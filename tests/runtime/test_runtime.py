"""The torch-free runtime on ONNX Runtime (CPU): encodings, padding, bad input, resizing, palette, providers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the [deploy] extra")

from lix_deploy.artifact import ArtifactError, read_metadata  # noqa: E402
from lix_deploy.runtime import (  # noqa: E402
    Segmenter, backend_for_artifact, colorize, image_from_buffer, overlay, palette_from_ints, resize_mask,
    to_model_input, to_rgb,
)
from lix_deploy.runtime.backends.onnxruntime_backend import (  # noqa: E402
    CPU_EP, CUDA_EP, TENSORRT_EP, ProviderSettings, provider_config, provider_options, select_providers,
)
from runtime_fixtures import (  # noqa: E402
    CLASS_NAMES, PALETTE, SIZE, expected_labels, gray_scene, make_tiny_onnx, scene,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "static": make_tiny_onnx(root / "static.onnx"),
        "dynamic": make_tiny_onnx(root / "dynamic.onnx", dynamic_batch=True, with_logits=True),
        "bare": make_tiny_onnx(root / "bare.onnx", metadata=False),
    }


@pytest.fixture(scope="module")
def segmenter(models):
    return Segmenter(models["static"], intra_op_threads=1)


# ---- encodings and layouts ------------------------------------------------------------------
def test_every_colour_encoding_gives_the_same_mask(segmenter):
    rgb = scene()
    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    layouts = {"rgb8": rgb, "bgr8": bgr, "rgba8": np.concatenate([rgb, alpha], 2),
               "bgra8": np.concatenate([bgr, alpha], 2)}
    masks = {name: segmenter.segment(image, name) for name, image in layouts.items()}
    # the scene's blocks are aligned with the 2x downscale, so the model sees exact block colours
    np.testing.assert_array_equal(masks["rgb8"], expected_labels(rgb))
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, masks["rgb8"], err_msg=name)
    assert len(np.unique(masks["rgb8"])) == 5


def test_mono8_matches_the_same_gray_scene_in_rgb8(segmenter):
    gray = gray_scene()
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    expected = segmenter.segment(as_rgb, "rgb8")
    np.testing.assert_array_equal(segmenter.segment(gray, "mono8"), expected)
    np.testing.assert_array_equal(segmenter.segment(gray[:, :, None], "mono8"), expected)
    assert set(np.unique(expected)) == {3, 4}  # bright and dark halves


@pytest.mark.parametrize("encoding,channels", [("rgb8", 3), ("bgra8", 4), ("mono8", 1)])
def test_row_padding_from_a_ros_step_is_honoured(segmenter, encoding, channels):
    height, width, pad = 64, 96, 13
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    rows = np.zeros((height, width * channels + pad), np.uint8)  # ROS Image: step > width * channels
    rows[:, : width * channels] = image.reshape(height, -1)
    rows[:, width * channels:] = 255  # padding bytes must never be read
    view = image_from_buffer(rows.tobytes(), height, width, width * channels + pad, encoding)
    assert view.strides[0] == width * channels + pad
    np.testing.assert_array_equal(view, image)
    plain = image[:, :, 0] if channels == 1 else image
    np.testing.assert_array_equal(segmenter.segment(view, encoding), segmenter.segment(plain, encoding))
    # a numpy view with a larger row stride (a crop of a wider frame) works the same way
    wide = np.zeros((height, width + 7, channels), np.uint8)
    wide[:, :width] = image
    cropped = wide[:, :width] if channels > 1 else wide[:, :width, 0]
    np.testing.assert_array_equal(segmenter.segment(cropped, encoding), segmenter.segment(plain, encoding))


@pytest.mark.parametrize("image,encoding,message", [
    (np.zeros((8, 8, 3), np.uint8), "yuv422", "unsupported image encoding 'yuv422'"),
    (np.zeros((8, 8, 3), np.uint8), "rgba8", r"rgba8 image must have shape \(H, W, 4\), got \(8, 8, 3\)"),
    (np.zeros((8, 8), np.uint8), "rgb8", r"rgb8 image must have shape \(H, W, 3\)"),
    (np.zeros((8, 8, 3), np.uint8), "mono8", r"mono8 image must have shape \(H, W\) or \(H, W, 1\)"),
    (np.zeros((0, 8, 3), np.uint8), "rgb8", "empty image"),
    (np.zeros((8, 8, 3), np.float32), "rgb8", "must be uint8, got dtype float32"),
    ([[1, 2, 3]], "rgb8", "must be a numpy array"),
])
def test_bad_images_raise_value_errors_naming_the_problem(segmenter, image, encoding, message):
    with pytest.raises(ValueError, match=message):
        segmenter.segment(image, encoding)


def test_image_from_buffer_rejects_inconsistent_messages():
    with pytest.raises(ValueError, match="step=10 is smaller than width\\*channels=12"):
        image_from_buffer(bytes(40), 4, 4, 10, "rgb8")
    with pytest.raises(ValueError, match="needs 48"):
        image_from_buffer(bytes(40), 4, 4, 12, "bgr8")
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_from_buffer(bytes(40), 4, 4, 12, "16UC1")
    with pytest.raises(ValueError, match="empty image"):
        image_from_buffer(b"", 0, 4, 12, "rgb8")


# ---- to_model_input -------------------------------------------------------------------------
def test_to_model_input_is_nchw_rgb_0_255_float32():
    rgb = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    tensor = to_model_input(rgb[:, :, ::-1].copy(), "bgr8", (32, 48))
    assert tensor.shape == (1, 3, 32, 48) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    np.testing.assert_array_equal(tensor[0], rgb.transpose(2, 0, 1).astype(np.float32))  # same size: no resize


def test_to_model_input_shrinks_with_inter_area_and_grows_with_inter_linear():
    rgb = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    small = to_model_input(rgb, "rgb8", (32, 48))[0].transpose(1, 2, 0)
    np.testing.assert_array_equal(small, cv2.resize(rgb, (48, 32), interpolation=cv2.INTER_AREA))
    large = to_model_input(rgb, "rgb8", (64, 96))[0].transpose(1, 2, 0)
    np.testing.assert_array_equal(large, cv2.resize(rgb, (96, 64), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="size must be positive"):
        to_model_input(rgb, "rgb8", (0, 48))


def test_to_rgb_drops_alpha_and_reorders():
    bgra = np.array([[[1, 2, 3, 4]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(bgra, "bgra8"), [[[3, 2, 1]]])
    np.testing.assert_array_equal(to_rgb(np.array([[7]], np.uint8), "mono8"), [[[7, 7, 7]]])


# ---- postprocessing -------------------------------------------------------------------------
def test_resize_mask_is_nearest_at_pixel_centres():
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(resize_mask(mask, (6, 8)), np.repeat(np.repeat(mask, 2, 0), 2, 1))
    big = np.arange(64, dtype=np.int32).reshape(8, 8)
    np.testing.assert_array_equal(resize_mask(big, (4, 4)), big[1::2, 1::2])  # centres of 2x2 blocks
    assert resize_mask(big, (4, 4)).dtype == np.int32
    assert resize_mask(mask, (3, 4)) is mask
    assert set(np.unique(resize_mask(mask, (7, 5)))) <= set(mask.ravel())  # never invents labels
    with pytest.raises(ValueError, match="size must be positive"):
        resize_mask(mask, (0, 4))


@pytest.mark.parametrize("src, dst", [((192, 640), (480, 640)), ((96, 320), (480, 640)), ((64, 128), (37, 301)),
                                      ((480, 640), (192, 640)), ((5, 7), (5, 20)), ((1, 1), (3, 2))])
def test_separable_resize_mask_equals_the_2d_gather(src, dst):
    """The fast path (rows, then columns only if the width changes) picks exactly the centre-sampled pixels."""
    mask = np.random.default_rng(0).integers(0, 200, src).astype(np.uint8)
    rows = np.minimum(((np.arange(dst[0]) + 0.5) * (src[0] / dst[0])).astype(np.intp), src[0] - 1)
    cols = np.minimum(((np.arange(dst[1]) + 0.5) * (src[1] / dst[1])).astype(np.intp), src[1] - 1)
    out = resize_mask(mask, dst)
    np.testing.assert_array_equal(out, mask[rows[:, None], cols[None, :]])
    assert out.flags.c_contiguous and out.dtype == np.uint8


def test_mask_comes_back_at_the_input_resolution(segmenter):
    for shape in [(75, 130, 3), (16, 24, 3), (32, 48, 3), (100, 37, 3)]:
        image = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
        mask = segmenter.segment(image)
        assert mask.shape == shape[:2] and mask.dtype == np.uint8
        model_labels = expected_labels(to_model_input(image, "rgb8", SIZE)[0].transpose(1, 2, 0))
        np.testing.assert_array_equal(mask, resize_mask(model_labels, shape[:2]))


def test_colorize_uses_the_palette_from_the_metadata(segmenter):
    mask = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    colour = segmenter.colorize(mask)
    assert colour.shape == (2, 3, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour.reshape(-1, 3)[:5], PALETTE)
    np.testing.assert_array_equal(colour[1, 2], [0, 0, 0])  # ignore / unknown ids are black
    np.testing.assert_array_equal(colorize(mask.astype(np.int32), PALETTE), colour)
    assert palette_from_ints([0xFF0000, 0x00FF80]) == [[255, 0, 0], [0, 255, 128]]
    with pytest.raises(ValueError, match="0xRRGGBB"):
        palette_from_ints([0x1000000])


def test_overlay_blends_image_and_colours(segmenter):
    image = np.full((4, 6, 3), 100, np.uint8)
    mask = np.zeros((4, 6), np.uint8)  # red class
    blended = segmenter.overlay(image, mask, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], [178, 50, 50])  # round(0.5*100 + 0.5*255), 0.5*100
    np.testing.assert_array_equal(overlay(image, np.zeros_like(image), 0.0), image)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, image, 1.5)


# ---- artefact discovery -----------------------------------------------------------------------
def test_io_and_metadata_are_discovered_from_the_onnx(segmenter, models):
    assert segmenter.backend_name == "onnxruntime"
    assert segmenter.info.class_names == CLASS_NAMES and segmenter.class_names == CLASS_NAMES
    assert segmenter.input_size == SIZE and segmenter.info == read_metadata(models["static"])
    described = segmenter.describe()
    assert described["providers"] == [CPU_EP] and described["input"] == "image"
    assert described["outputs"] == ["labels"] and described["num_classes"] == 5


def test_onnx_without_lix_metadata_is_rejected_unless_info_is_given(models, segmenter):
    with pytest.raises(ArtifactError, match="no LIX metadata key lix.format_version"):
        Segmenter(models["bare"])
    bare = Segmenter(models["bare"], info=segmenter.info)
    image = scene()
    np.testing.assert_array_equal(bare.segment(image), segmenter.segment(image))


def test_dynamic_batch_and_logits(models, segmenter):
    dynamic = Segmenter(models["dynamic"], intra_op_threads=1, max_batch=2)
    assert dynamic.backend.dynamic_batch and dynamic.backend.max_batch == 2
    images = [scene(), scene(40, 50), gray_scene()[:, :, None].repeat(3, 2)]
    masks = dynamic.segment_batch(images)
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(mask, segmenter.segment(image))
    np.testing.assert_array_equal(segmenter.segment_batch(images)[1], masks[1])  # static model: one at a time
    batch = np.concatenate([to_model_input(img, "rgb8", SIZE) for img in images[:2]])
    output = dynamic.infer(batch)
    assert output.logits.shape == (2, 5) + SIZE
    np.testing.assert_array_equal(output.labels, output.logits.argmax(1))
    with pytest.raises(ValueError, match="batch size 3 is outside 1..2"):
        dynamic.infer(np.concatenate([batch, batch[:1]]))
    with pytest.raises(ValueError, match="model input must be 32x48"):
        dynamic.infer(np.zeros((1, 3, 16, 16), np.float32))


def test_latency_stats_count_calls(models):
    seg = Segmenter(models["static"], intra_op_threads=1)
    assert seg.last_latency_ms is None and seg.latency_stats()["count"] == 0
    for _ in range(3):
        seg.segment(scene())
    stats = seg.latency_stats()
    assert stats["count"] == 3 and stats["window"] == 3 and seg.last_latency_ms > 0
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    seg.reset_latency_stats()
    assert seg.latency_stats()["count"] == 0


def test_backend_is_resolved_from_the_suffix(tmp_path):
    assert backend_for_artifact("m.onnx") == "onnxruntime"
    assert backend_for_artifact("m.engine") == backend_for_artifact("m.plan") == "tensorrt"
    with pytest.raises(ValueError, match="cannot tell the backend"):
        backend_for_artifact("m.bin")
    with pytest.raises(ValueError, match="backend='tensorrt' needs an engine"):
        backend_for_artifact("m.onnx", "tensorrt")
    with pytest.raises(ValueError, match="is not one of"):
        backend_for_artifact("m.onnx", "openvino")
    with pytest.raises(FileNotFoundError, match="model artefact not found"):
        Segmenter(tmp_path / "missing.onnx")
    with pytest.raises(ArtifactError, match="missing.onnx: model artefact not found; export one"):
        Segmenter(tmp_path / "missing.onnx")


@pytest.mark.parametrize("content", [b"\x08\x07garbage" * 10, b"", "truncated"], ids=["garbage", "empty", "truncated"])
def test_a_corrupt_onnx_file_is_an_artifact_error_naming_the_file(models, tmp_path, content):
    """Issue 15: not onnxruntime's raw InvalidProtobuf, but the project's error, the file and what to do."""
    path = tmp_path / "corrupt.onnx"
    if content == "truncated":
        data = models["static"].read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as caught:
        Segmenter(path, info=read_metadata(models["static"]))  # info: past the metadata, to the model itself
    message = str(caught.value)
    assert type(caught.value) is ArtifactError and message.startswith(f"{path}: ONNX Runtime cannot load")
    assert "python -m lix_deploy.export" in message and "[ONNXRuntimeError]" not in message


# ---- ONNX Runtime providers (pure) -------------------------------------------------------------
def test_select_providers_prefers_tensorrt_then_cuda_then_cpu():
    everything = ["AzureExecutionProvider", CPU_EP, CUDA_EP, TENSORRT_EP]
    assert select_providers(everything) == [TENSORRT_EP, CUDA_EP, CPU_EP]
    assert select_providers([CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert select_providers(["AzureExecutionProvider", CPU_EP]) == [CPU_EP]
    assert select_providers(everything, ["cuda", "cpu"]) == [CUDA_EP, CPU_EP]
    assert select_providers(everything, "cpu") == [CPU_EP]


def test_requesting_a_missing_gpu_provider_explains_the_onnxruntime_gpu_clash():
    with pytest.raises(ValueError, match="'tensorrt' is not available.*onnxruntime-gpu"):
        select_providers([CPU_EP], ["tensorrt"])
    with pytest.raises(ValueError, match="at least one"):
        select_providers([CPU_EP], [])


def test_provider_options_set_engine_cache_precision_and_profiles():
    settings = ProviderSettings(device_id=1, trt_cache_dir="/cache", fp16=True, input_hw=(32, 48), max_batch=4,
                                dynamic_batch=True)
    trt = provider_options(TENSORRT_EP, settings)
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == "/cache"
    assert trt["trt_timing_cache_enable"] == "True"
    assert trt["trt_profile_min_shapes"] == "image:1x3x32x48" and trt["trt_profile_max_shapes"] == "image:4x3x32x48"
    static = provider_options(TENSORRT_EP, ProviderSettings(input_hw=(32, 48)))
    assert "trt_profile_min_shapes" not in static and "trt_engine_cache_enable" not in static
    assert provider_options(CUDA_EP, settings) == {"device_id": "1", "arena_extend_strategy": "kSameAsRequested"}
    providers, options = provider_config([CPU_EP, CUDA_EP], None, settings)
    assert providers == [CUDA_EP, CPU_EP] and options[1] == {}
    with pytest.raises(ValueError, match="max_batch"):
        ProviderSettings(max_batch=0)
