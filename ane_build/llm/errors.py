"""Error types of the LLM layer, all derived from `ane_build.errors.AneError`.

Exception types only; this module must not import anything heavier than the error tree.
"""

from __future__ import annotations

from ..errors import AneError


class LlmError(AneError):
    """A checkpoint, split plan, manifest or chunked run that cannot be used."""


class CheckpointError(LlmError):
    """A checkpoint folder whose config or weights cannot be read or are not supported."""


class PlanError(LlmError):
    """Chunk settings that cannot work: too many layers for a program, or a model too big."""


class ManifestError(LlmError):
    """A ``manifest.json`` that is missing, malformed or disagrees with its chunk files."""


class ContextFullError(LlmError):
    """More positions were asked for than the chunks' static context holds."""
