"""The node's parameter table and what is derived from it: settings classes, the shipped YAML, the README table.

The table needs neither rclpy nor DDS, so these run in-process; the declaration with real rclpy runs
in a private network namespace (tests/helpers/ros_helpers.py), as every DDS test does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import pytest
import yaml

from lix_seg.parameters import (LIVE_PARAMETERS, PARAMETERS, LiveSettings, StartupParameters, render_markdown,
                                render_yaml)
from ros_helpers import ROOT, ROS_NODE, require_netns, require_rclpy, run_in_netns

YAML_FILES = sorted(ROS_NODE.rglob("*.yaml"))
README = ROS_NODE / "README.md"
PARAM_LINE = re.compile(r"^    # (\w+): \S")  # a parameter commented out in the YAML


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_the_table_declares_each_parameter_once_with_a_default_of_its_type():
    names = [p.name for p in PARAMETERS]
    assert len(names) == len(set(names))
    python = {"bool": bool, "integer": int, "double": float, "string": str}
    for p in PARAMETERS:
        if p.type.endswith("_array"):
            assert p.default == () and (p.example or p.from_artifact), p.name
        else:
            assert type(p.default) is python[p.type], p.name  # rclpy types a parameter by its default
            assert p.problem(p.default) is None or p.name == "artifact_path", p.name


def test_settings_classes_are_the_table():
    startup = {f.name: f.default for f in dataclasses.fields(StartupParameters)}
    assert startup == {p.name: p.default for p in PARAMETERS if not p.live and p.from_artifact is None}
    assert tuple(f.name for f in dataclasses.fields(LiveSettings)) == LIVE_PARAMETERS
    settings = StartupParameters(artifact_path="m.onnx", providers=["cuda"])
    assert settings.providers == ("cuda",) and settings.diagnostics_period == 1.0
    with pytest.raises(ValueError, match=r"parameter warmup_runs must be >= 0, got -1"):
        StartupParameters(artifact_path="m.onnx", warmup_runs=-1)
    with pytest.raises(ValueError, match=r"parameter overlay_alpha=1.5 must lie in \[0.0, 1.0\]"):
        LiveSettings(color_palette=((0, 0, 0),), overlay_alpha=1.5)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROS_NODE)))
def test_yaml_lists_exactly_the_table_with_its_defaults(path):
    text = path.read_text()
    assert text == render_yaml(), f"regenerate: PYTHONPATH=ros_node python -m lix_seg.parameters yaml > {path}"
    values = yaml.safe_load(text)["segmenter"]["ros__parameters"]
    assert values == {p.name: _plain(p.default) for p in PARAMETERS if p.fixed_default}
    commented = [m.group(1) for line in text.splitlines() if (m := PARAM_LINE.match(line))]
    assert commented == [p.name for p in PARAMETERS if not p.fixed_default]


def test_readme_table_lists_exactly_the_table_with_its_defaults():
    text = README.read_text()
    block = re.search(r"<!-- parameters: [^\n]*-->\n(.*?)<!-- /parameters -->", text, re.S)
    assert block, "ros_node/README.md lost its <!-- parameters --> block"
    assert block.group(1) == render_markdown(), "regenerate: PYTHONPATH=ros_node python -m lix_seg.parameters markdown"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.group(1).splitlines()[2:]]
    assert [row[0].strip("`") for row in rows] == [p.name for p in PARAMETERS]
    for row, p in zip(rows, PARAMETERS):
        assert row[1] == p.type and row[3] == ("live" if p.live else "restart"), p.name
        if p.fixed_default:
            assert yaml.safe_load(row[2].strip("`")) == _plain(p.default), p.name
        else:
            assert row[2] == ("the artefact's" if p.from_artifact else "unset"), p.name


DECLARE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from lix_deploy.artifact import ArtifactInfo
from lix_seg.parameters import PARAMETERS, declare_artifact_parameters, declare_startup_parameters

rclpy.init()
node = Node("segmenter", parameter_overrides=[Parameter("artifact_path", value="m.onnx"),
                                              Parameter("warmup_runs", value=3)])
info = ArtifactInfo(class_names=["a", "b"], palette=[[1, 2, 3], [4, 5, 6]], input_size=(32, 48),
                    mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], outputs=["labels"])
startup = declare_startup_parameters(node)
live = declare_artifact_parameters(node, info)
again = declare_artifact_parameters(node, info)  # a lifecycle re-configure: declared already
names = [p.name for p in PARAMETERS]
described = {d.name: [d.description, d.read_only, [r.to_value for r in d.floating_point_range]]
             for d in node.describe_parameters(names)}
refused = [not r.successful for r in node.set_parameters([
    Parameter("input_size", value=[1, 1]), Parameter("overlay_alpha", value=2.0),
    Parameter("publish_overlay", value=True)])]
print(json.dumps({"startup": repr(startup), "live": repr(live), "same": live == again,
                  "described": described, "refused": refused,
                  "declared": sorted(n for n in names if node.has_parameter(n))}))
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.ros
def test_rclpy_declares_the_table(tmp_path):
    require_rclpy()
    require_netns()
    env = dict(os.environ, ROS_DOMAIN_ID="63", ROS_LOG_DIR=str(tmp_path), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    done = run_in_netns([sys.executable, "-c", DECLARE, str(ROS_NODE)], env, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["startup"] == ("StartupParameters(artifact_path='m.onnx', backend='auto', image_transport='raw', "
                                 "providers=(), intra_op_threads=0, warmup_runs=3, diagnostics_period=1.0)")
    assert result["live"] == ("LiveSettings(publish_mask=True, publish_colored_mask=True, publish_overlay=False, "
                              "overlay_alpha=0.5, color_palette=((1, 2, 3), (4, 5, 6)))")
    assert result["same"] and result["declared"] == sorted(p.name for p in PARAMETERS)
    for p in PARAMETERS:
        description, read_only, ranges = result["described"][p.name]
        assert description == p.description and read_only == (not p.live), p.name
        assert ranges == ([p.value_range[1]] if p.value_range else []), p.name
    assert result["refused"] == [True, True, False]
