"""Pieces every command shares: exit codes, argument types, the progress meter, the output stream.

Nothing here calls the library beyond argument checks.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ..driver.device import check_device_spec
from ..errors import InvalidArgumentError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Inputs, test data or tolerances that do not fit the model (`InputError`): fix the data, not
# the program.
EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 130


class Progress:
    """A one-line byte progress meter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` bytes (only for outputs over 64 MiB)."""
        if self.enabled and total > (64 << 20):
            pct = 100 * done // max(total, 1)
            sys.stderr.write(f"\r{self.label}: {done >> 20} / {total >> 20} MiB ({pct}%)")
            sys.stderr.flush()
            self.shown = True

    def finish(self) -> None:
        """End the meter's line, if it drew one."""
        if self.shown:
            sys.stderr.write("\n")


def positive(text: str) -> int:
    """An argparse type: a positive integer (decimal or 0x hex)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {value})")
    return value


def natural(text: str) -> int:
    """An argparse type: an integer >= 0 (a seed)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def payload_name(text: str) -> str:
    """An argparse type: a payload name an ``--override`` can take."""
    from ..artifacts.spec import PAYLOAD_NAMES  # numpy and pydantic: only when the flag is used

    if text not in PAYLOAD_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(PAYLOAD_NAMES)}")
    return text


def device(text: str) -> str:
    """An argparse type: a device spec `open_device` accepts (a usage error otherwise)."""
    try:
        return check_device_spec(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a tolerance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text})")
    return value


def _named(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return name, value


def named_file(text: str) -> tuple[str, Path]:
    """An argparse type: ``NAME=FILE``."""
    name, value = _named(text, "NAME=FILE")
    return name, Path(value)


def named_tolerance(text: str) -> tuple[str, float, float]:
    """An argparse type: ``NAME=ATOL,RTOL``."""
    name, value = _named(text, "NAME=ATOL,RTOL")
    parts = value.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected NAME=ATOL,RTOL, got {text!r}")
    atol, rtol = (non_negative_float(part) for part in parts)
    return name, atol, rtol


class UniqueNames(argparse.Action):
    """``append`` for ``NAME=...`` values that refuses a name given twice (a usage error)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        """Append ``values`` (a tuple whose first item is the name)."""
        given = list(getattr(namespace, self.dest) or [])
        if any(item[0] == values[0] for item in given):
            parser.error(f"{option_string}: {values[0]!r} is given more than once")
        setattr(namespace, self.dest, [*given, values])
