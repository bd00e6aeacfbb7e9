"""Error types of the chat layer, all derived from `ane_build.errors.AneError`.

This module defines exception types only; it must not import onnxruntime, tokenizers or jinja2.
"""

from __future__ import annotations

from ..errors import AneError


class ChatError(AneError):
    """A chat model, tokenizer, template or generation request that cannot be used."""


class ChatDependencyError(ChatError, ImportError):
    """An optional dependency of the ``[chat]`` extra is not installed."""


class ContextOverflowError(ChatError):
    """A prompt that does not fit the model's context window even with all old turns dropped."""
