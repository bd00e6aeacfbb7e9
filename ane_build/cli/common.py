"""Pieces every command shares: exit codes, argument types, the progress meter, the output stream.

Nothing here calls the library beyond argument checks.
"""

from __future__ import annotations

import argparse
import sys

from ..driver.device import check_device_spec
from ..errors import InvalidArgumentError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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
