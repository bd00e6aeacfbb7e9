"""The ``doit why`` and ``doit watch`` commands, registered through doit's COMMAND entry point.

Thin front-ends over the same code as ``python -m ane_build why|watch``; nothing else lives here.
"""

from __future__ import annotations

from typing import Any

from doit.cmd_base import Command

from .main import main
from .project import WATCH_FLAGS


class WhyCommand(Command):  # type: ignore[misc]
    """``doit why [MODEL...]``: say why each model would be rebuilt, without building."""

    name = "why"
    doc_purpose = "explain why models would be rebuilt (builds nothing)"
    doc_usage = "[MODEL ...]"

    def execute(self, params: Any, args: list[str]) -> int:
        """Print reasons; exit 0."""
        return main(["why", *args])


class WatchCommand(Command):  # type: ignore[misc]
    """``doit watch``: rebuild affected models whenever their inputs change."""

    name = "watch"
    doc_purpose = "watch inputs and rebuild affected models (Ctrl-C to stop)"
    doc_usage = " ".join(f"[--{flag}]" for flag, _ in WATCH_FLAGS)
    cmd_options = tuple(
        {"name": flag.replace("-", "_"), "long": flag, "type": bool, "default": False, "help": text}
        for flag, text in WATCH_FLAGS
    )

    def execute(self, params: Any, args: list[str]) -> int:
        """Run the watch loop until Ctrl-C."""
        flags = [f"--{flag}" for flag, _ in WATCH_FLAGS if params[flag.replace("-", "_")]]
        return main(["watch", *flags, *args])
