"""Validating the JSON this package reads (configs, manifests, settings) with one line per problem.

A thin use of `ane_build._validation`: no I/O, no knowledge of what the models mean.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .._validation import JSON, dotted, problems
from .errors import LlmError

_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], data: Any, where: str, error: type[LlmError]) -> _M:
    """``data`` as ``model``, or ``error`` with a ``where: key: problem`` line per problem.

    Raises:
        LlmError: ``error``, the pydantic error as its cause.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{where}: {dotted(loc) or '(top level)'}: {message}"
            for loc, message in problems(exc, data, model, JSON)
        ]
        raise error("\n".join(lines)) from exc
