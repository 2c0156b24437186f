"""The deployment tools' side of the one command-line style (lix_common/cli.py holds the base and
the exit-code table). Torch-free.

Each `python -m lix_deploy.TOOL` (export, calib, build_engine, benchmark, bag, doctor; also
installed as `lix-TOOL` console scripts) builds its parser with `ToolParser` and runs its work
through `run_tool`: bad input (`run_tool`'s `bad_input` plus `usage_errors()`) exits 2 and a
toolchain failure (`failed`) exits 1, each as one line `TOOL: ...`; any other exception is a bug
and keeps its traceback. lix_train.cli does the same for the training tools (which import torch).
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from lix_common.cli import (  # noqa: F401 - the exit codes and helpers every lix_deploy tool imports from here
    EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, OneLineParser, count, one_line, report,
)

ErrorTypes = tuple[type[BaseException], ...]


class UsageError(ValueError):
    """Options that cannot be used as given; the message names them and what to give instead."""


class ToolParser(OneLineParser):
    """The one-line parser for `python -m lix_deploy.TOOL [COMMAND]`, defaults in --help; its error line
    starts with the tool's short name (`calib: error: ...`)."""

    def __init__(self, tool: str, description: str, command: str = "", **kwargs):
        self.tool = tool
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        prog = f"python -m lix_deploy.{tool}" + (f" {command}" if command else "")
        super().__init__(prog=prog, description=description, error_name=tool, **kwargs)


def usage_errors() -> ErrorTypes:
    """Bad input every tool can meet: its options, an artefact, a backend that is not installed."""
    from lix_deploy.artifact import ArtifactError
    from lix_deploy.runtime.backends.base import BackendUnavailableError, EngineMismatchError

    return (UsageError, ArtifactError, BackendUnavailableError, EngineMismatchError)


def run_tool(parser: ToolParser, argv: Sequence[str] | None, body: Callable[[argparse.Namespace], int], *,
             bad_input: ErrorTypes = (), failed: ErrorTypes = ()) -> int:
    """Parse `argv`, run `body` and return its exit code; `failed` errors exit 1 and `bad_input` ones
    (with `usage_errors()`) exit 2, each as one line on stderr. `failed` is checked first, so it may
    hold subclasses of `bad_input` types."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except failed as err:
        report(parser.tool, f"failed: {one_line(err)}")
        return EXIT_FAILED
    except bad_input + usage_errors() as err:
        report(parser.tool, f"error: {one_line(err)}")
        return EXIT_BAD_INPUT
