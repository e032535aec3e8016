"""argparse pieces of the gpumlp command: the option types, one-line errors and --help
with every default."""
import argparse
from typing import Any, NoReturn

import numpy as np

DEFAULT_LR = {"ce": 0.1, "hinge": 0.01, "mse": 0.02}     # gpumlp train's, by loss (tuned on the digits)


def extra_hint(extra: str) -> str:
    """How to install one of gpumlp's extras (plot, gpu, sklearn, mpi): from its checkout, as
    gpumlp is not on PyPI."""
    return f"pip install -e '.[{extra}]' (in the gpumlp checkout)"


class UsageError(SystemExit):
    """A bad command line: exit status 2 and one line on stderr, which main() prints."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class Parser(argparse.ArgumentParser):
    """Option errors are one line, with where to read more, not the whole usage block."""

    commands: dict[str, "Parser"] = {}

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """As argparse's, with options unknown to a command blamed on that command."""
        a, extras = self.parse_known_args(args, namespace)
        if extras:
            self.commands.get(str(getattr(a, "command", "")), self).error(f"unrecognized arguments: {' '.join(extras)}")
        return a


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none to show (a flag that is
    off, or a help text that says it already)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or "default" in help:
            return help
        return super()._get_help_string(action)


def hidden(text: str) -> list[int]:
    """--hidden: positive widths separated by commas (or spaces): 256 or 256,128."""
    parts = text.split(",") if "," in text else text.split()
    try:
        widths = [int(w) for w in parts]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer widths such as 128 or 128,64; got {text!r}")
    return widths


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = True) -> Any:
    """A float in [low, high) (or as the flags say), for argparse."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = np.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            span = f"{lo}{low}, {high}{hi}" if high is not None else f"{'> ' if low_open else '>= '}{low}"
            where = "in " if high is not None else ""
            raise argparse.ArgumentTypeError(f"expected a number {where}{span}; got {text!r}")
        return value
    return parse


def given(argv: list[str]) -> set[str]:
    """The long options written on the command line (dest names), defaults apart."""
    return {tok[2:].split("=")[0].replace("-", "_") for tok in argv if tok.startswith("--")}
