"""lix_deploy.runtime, lix_common (and the doctor) never import torch: robots run the student without it. Nor
do the deployment tools other than export at import time (torch only where a PyTorch model is run)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from repo_paths import ROOT

RUNTIME = ROOT / "lix_deploy" / "runtime"
FORBIDDEN = ("torch", "torchvision", "lix_train.models", "lix_train.engine", "lix_train.distillers",
             "lix_train.losses")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(RUNTIME.rglob("*.py")) + sorted((ROOT / "lix_common").glob("*.py"))
                         + [ROOT / "lix_deploy" / "doctor.py", ROOT / "lix_deploy" / "cli.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_imports_torch(path):
    bad = {name for name in _imported_modules(path) if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_segmenting_an_image_loads_no_torch(tmp_path):
    pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the [deploy] extra")
    from runtime_fixtures import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import lix_deploy.runtime
        from lix_deploy.runtime import Segmenter
        seg = Segmenter({str(model)!r}, intra_op_threads=1)
        mask = seg.segment(np.full((40, 60, 3), 200, np.uint8), "bgr8")
        assert mask.shape == (40, 60), mask.shape
        seg.colorize(mask)
        import lix_deploy.doctor
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")
                        or m.startswith(("lix_train.models", "lix_train.engine")))
        print("LEAKED", leaked)
        assert not leaked, leaked
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout


def test_deployment_tools_import_without_torch():
    """Every lix_deploy console script but export (which runs the PyTorch model) imports torch-free."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values()
    modules = sorted({s.split(":")[0] for s in scripts if s.startswith("lix_deploy.")} - {"lix_deploy.export"})
    assert "lix_deploy.build_engine" in modules
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print("LEAKED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout
