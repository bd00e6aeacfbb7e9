"""Lazy imports of the ``[chat]`` extra (onnxruntime, tokenizers, jinja2).

The core package must import without the extra, so chat modules call `require` at the point of use
instead of importing these libraries at module level. This module must not import them eagerly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ChatDependencyError


def require(module: str) -> ModuleType:
    """Import ``module`` or explain how to install it.

    Args:
        module: Dotted module name, e.g. ``"onnxruntime"`` or ``"jinja2.sandbox"``.

    Returns:
        The imported module.

    Raises:
        ChatDependencyError: The module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        raise ChatDependencyError(
            f"{top} is required for the chat features: pip install 'ane-build[chat]'"
        ) from exc
