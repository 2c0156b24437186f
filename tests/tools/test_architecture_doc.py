"""docs/architecture.md stays true: every registered method, source and backend is documented there."""

from __future__ import annotations

import re

from lix_deploy.runtime.segmenter import BACKENDS
from lix_train.data.sources import SOURCES
from lix_train.distillers import DISTILLERS
from repo_paths import ROOT

DOC = (ROOT / "docs" / "architecture.md").read_text()


def _section(title: str) -> str:
    return DOC.split(f"### {title}", 1)[1].split("\n### ", 1)[0]


def test_every_registered_method_has_its_line():
    documented = re.findall(r"^- `([a-z_]+)`:", _section("A distillation method"), flags=re.M)
    assert documented == list(DISTILLERS)


def test_every_source_and_backend_is_named():
    assert all(f"`{name}`" in _section("A dataset") for name in SOURCES)
    assert all(f"`{name}`" in _section("An inference backend") for name in BACKENDS)


def test_the_files_it_points_to_exist():
    for path in re.findall(r"`((?:lix_train|lix_deploy|tests)/[\w/]+\.(?:py|yaml))`", DOC):
        assert (ROOT / path).is_file(), path
