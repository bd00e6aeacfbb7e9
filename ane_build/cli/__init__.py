"""The command line: ``ane-build`` / ``python -m ane_build`` and ``convert-to-ane``.

Nothing in the package imports this layer; it only parses arguments, calls the library and prints.
"""

from .main import convert_main, main

__all__ = ["convert_main", "main"]
