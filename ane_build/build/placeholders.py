"""Placeholders in ``[compile]`` values: ``{name}``, ``{root}``, ``{source}``, ``{out}``...

One home for which placeholder may stand where, how a template is checked (every problem worded
for a config file) and how it is filled in. Pure string work: no files, no processes.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Collection, Mapping

# Known when configs are loaded: usable in paths (tool, inputs, outputs).
PATH_PLACEHOLDERS = ("name", "root")
# Known when the compiler runs: usable in the command line and the environment.
RUN_PLACEHOLDERS = ("name", "root", "source", "out", "tool", "python")

_FORMATTER = string.Formatter()


def _braced(names: Collection[str]) -> str:
    return ", ".join(f"{{{n}}}" for n in names)


def fields_of(template: str) -> list[str]:
    """The placeholder names in ``template``, in order.

    Raises:
        ValueError: The template is malformed (an unmatched brace, a format spec or conversion),
            with a message for a config file.
    """
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(
            f"{str(exc).rstrip('.').lower()}: write {{{{ and }}}} for literal braces"
        ) from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} takes no format spec or conversion")
        names.append(field)
    return names


def check_template(template: str, allowed: Collection[str]) -> str:
    """``template`` when every placeholder in it is one of ``allowed``.

    Raises:
        ValueError: A placeholder is unknown or not available here (the message lists the
            allowed ones and suggests the closest).
    """
    for field in fields_of(template):
        if field in allowed:
            continue
        where = "is not available here" if field in RUN_PLACEHOLDERS else "is unknown"
        close = difflib.get_close_matches(field, list(allowed), n=1)
        hint = f"; did you mean {{{close[0]}}}?" if close else ""
        raise ValueError(f"placeholder {{{field}}} {where} (allowed: {_braced(allowed)}){hint}")
    return template


def expand(template: str, values: Mapping[str, str]) -> str:
    """``template`` with its placeholders filled in (checked beforehand by `check_template`)."""
    return template.format_map(values)
