"""The command line: ``ane-build`` / ``python -m ane_build`` and ``convert-to-ane``.

Nothing in the package imports this layer; it only parses arguments, calls the library and prints.
The entry points are loaded on first use: doit imports `ane_build.cli.doit_commands` (its
plugins) on every run, and a no-op build must not pay for importing the whole command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["convert_main", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
