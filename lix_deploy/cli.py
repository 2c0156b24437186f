"""One command-line style and one table of exit codes for every lix_deploy tool. Torch-free.

Each `python -m lix_deploy.TOOL` (export, calib, build_engine, benchmark, bag, doctor; also
installed as `lix-TOOL` console scripts) builds its parser with `ToolParser` and runs its work
through `run_tool`, so all of them end the same way:

    0  done
    1  the work ran and failed: the TensorRT / ONNX Runtime toolchain could not build the
       artefact (one line), or a benchmark backend errored (its row says why); a bug also
       ends with 1, and with its traceback
    2  bad input: a bad option, a missing or unusable file, a calibration set that does not fit
       the model, a backend that is not installed; one line on stderr, `TOOL: error: MESSAGE`,
       naming the file or option
    3  refused by a gate: export's numerical verification against PyTorch (nothing written), or
       build_engine's accuracy gate (the FP32 artefact is kept); the report says why

Bad input is the project's own error types only (`run_tool`'s `bad_input` plus `usage_errors()`);
any other exception is a bug and keeps its traceback. lix_train.cli does the same for the
training tools, but it imports torch, which the deployment runtime must not.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3
ErrorTypes = tuple[type[BaseException], ...]


class UsageError(ValueError):
    """Options that cannot be used as given; the message names them and what to give instead."""


class ToolParser(argparse.ArgumentParser):
    """argparse for `python -m lix_deploy.TOOL [COMMAND]`: abbreviations off, defaults in --help, and a
    one-line error (`TOOL: error: ...`, exit 2) instead of a usage dump."""

    def __init__(self, tool: str, description: str, command: str = "", **kwargs):
        self.tool = tool
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        prog = f"python -m lix_deploy.{tool}" + (f" {command}" if command else "")
        super().__init__(prog=prog, description=description, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.tool}: error: {message} (see --help)\n")


def count(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum` (a bad one is a one-line parser error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def usage_errors() -> ErrorTypes:
    """Bad input every tool can meet: its options, an artefact, a backend that is not installed."""
    from lix_deploy.artifact import ArtifactError
    from lix_deploy.runtime.backends.base import BackendUnavailableError, EngineMismatchError

    return (UsageError, ArtifactError, BackendUnavailableError, EngineMismatchError)


def report(tool: str, message: str) -> None:
    print(f"{tool}: {message}", file=sys.stderr, flush=True)


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
