"""Every tool (a module with a `main`) is a console script, and every script's target is a callable `main(argv=None)`."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest
from repo_paths import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _modules_with_main() -> set[str]:
    found = set()
    for package in ("lix_train", "lix_deploy"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_every_tool_is_a_console_script():
    targets = _scripts().values()
    assert all(t.endswith(":main") for t in targets), sorted(targets)
    assert {t.split(":")[0] for t in targets} == _modules_with_main()
    assert all(name.startswith("lix-") for name in _scripts())


@pytest.mark.parametrize("name", sorted(_scripts()))
def test_script_target_is_a_main_that_takes_no_arguments(name):
    module, attr = _scripts()[name].split(":")
    main = getattr(importlib.import_module(module), attr)
    assert callable(main)
    signature = inspect.signature(main)
    signature.bind()  # a console script calls sys.exit(main())
    assert list(signature.parameters) == ["argv"] and signature.parameters["argv"].default is None
