"""The vehicle needs nothing from training: lix_deploy.runtime, the ROS node and lix_common import nothing
from lix_train, and an image is segmented in a process where `import lix_train` fails."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from repo_paths import ROOT

RUNTIME = ROOT / "lix_deploy" / "runtime"
NODE = ROOT / "ros_node" / "lix_seg"
COMMON = ROOT / "lix_common"
VEHICLE_SOURCES = sorted(RUNTIME.rglob("*.py")) + sorted(NODE.glob("*.py")) + sorted(COMMON.glob("*.py"))
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs")


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute module names a file imports (lazy imports inside functions too, unless top_level_only)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", VEHICLE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_vehicle_source_imports_lix_train(path):
    bad = {name for name in _imports(path) if name.split(".")[0] == "lix_train"}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_lix_common_needs_only_numpy_and_opencv():
    for path in sorted(COMMON.glob("*.py")):
        third_party = {name.split(".")[0] for name in _imports(path)} - set(sys.stdlib_module_names)
        assert third_party <= {"numpy", "cv2", "lix_common"}, f"{path} imports {sorted(third_party)}"


def _vehicle_modules() -> list[str]:
    """Every runtime module and lix_common module, and the node's modules (those needing ROS only when it is here)."""
    try:
        import rclpy  # noqa: F401
        import sensor_msgs.msg  # noqa: F401

        have_ros = True
    except ImportError:
        have_ros = False
    modules = [_module_name(p, ROOT) for p in sorted(RUNTIME.rglob("*.py")) + sorted(COMMON.glob("*.py"))]
    for path in sorted(NODE.glob("*.py")):
        needs_ros = any(name.split(".")[0] in ROS_PACKAGES for name in _imports(path, top_level_only=True))
        if have_ros or not needs_ros:
            modules.append(_module_name(path, NODE.parent))
    return modules


def test_the_runtime_and_the_node_run_without_lix_train(tmp_path):
    pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the [deploy] extra")
    from runtime_fixtures import make_tiny_onnx, scene

    from lix_deploy.runtime import Segmenter

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    image = scene(64, 96)  # twice the model size: preprocessing resizes (lix_common.interpolation)
    np.save(tmp_path / "image.npy", image)
    modules = _vehicle_modules()
    assert "lix_deploy.runtime.preprocess" in modules and "lix_seg.conversions" in modules
    code = textwrap.dedent(f"""
        import importlib, sys
        sys.modules["lix_train"] = None  # from here on, `import lix_train` (or any lix_train.*) raises ImportError
        try:
            import lix_train.data
        except ImportError:
            pass
        else:
            raise AssertionError("lix_train is still importable")
        sys.path.insert(0, {str(NODE.parent)!r})
        for name in {modules!r}:
            importlib.import_module(name)
        import numpy as np
        from lix_deploy.runtime import Segmenter
        seg = Segmenter({str(model)!r}, intra_op_threads=1)
        image = np.load({str(tmp_path / "image.npy")!r})
        np.save({str(tmp_path / "mask.npy")!r}, seg.segment(np.ascontiguousarray(image[:, :, ::-1]), "bgr8"))
        seg.close()
        loaded = sorted(m for m, module in sys.modules.items() if m.split(".")[0] == "lix_train" and module)
        builders = sorted(m for m in sys.modules if m.startswith("lix_deploy.builders"))
        print("LIX_TRAIN", loaded, "BUILDERS", builders)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LIX_TRAIN [] BUILDERS []" in done.stdout  # nor does it load a builder (lix_deploy.backend_table)
    with Segmenter(model, intra_op_threads=1) as seg:  # here lix_train is importable: the same mask
        np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), seg.segment(image, "rgb8"))
