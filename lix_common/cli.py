"""One command-line style and one table of exit codes for every tool of the project. Torch-free.

Training tools (`python -m lix_train.TOOL`, lix_train/cli.py) and deployment tools
(`python -m lix_deploy.TOOL`, lix_deploy/cli.py) build their parsers on `OneLineParser` and end
the same way:

    0  done
    1  the work ran and failed: the TensorRT / ONNX Runtime toolchain could not build the
       artefact (one line), or a benchmark backend errored (its row says why); a bug also
       ends with 1, and with its traceback
    2  bad input: a bad option, a missing or unusable file, a config that does not validate, a
       checkpoint of another network, a backend that is not installed; one line on stderr,
       `TOOL: error: MESSAGE`, naming the file or option
    3  refused by a gate: export's numerical verification against PyTorch (nothing written), or
       build_engine's accuracy gate (the FP32 artefact is kept); the report says why

Bad input is each package's own error types; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help once: none appended for options whose help already says it or that default to unset."""

    def _get_help_string(self, action):
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (`NAME: error: MESSAGE (see --help)`, exit 2) instead of a usage dump.

    Abbreviations are off: `--student.train.iter` must not silently mean `...iters`. `error_name` is the
    name the error line starts with (default: the program's).
    """

    def __init__(self, *args, error_name: str | None = None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        if kwargs.get("formatter_class") is argparse.ArgumentDefaultsHelpFormatter:
            kwargs["formatter_class"] = HelpFormatter  # the config options' help already names their default
        super().__init__(*args, **kwargs)
        self.error_name = error_name or self.prog

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.error_name}: error: {message} (see --help)\n")


def doc_parser(prog: str, doc: str) -> OneLineParser:
    """A tool's parser whose --help opens with the first two paragraphs of its module docstring (what it
    does, then how), laid out as written (the usage examples keep their lines)."""
    paragraphs = doc.split("\n\n")
    return OneLineParser(prog=prog, description=" ".join(paragraphs[:2]),
                         formatter_class=argparse.RawDescriptionHelpFormatter)


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
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def report(name: str, message: str) -> None:
    """`NAME: MESSAGE` on stderr, at once."""
    print(f"{name}: {message}", file=sys.stderr, flush=True)
