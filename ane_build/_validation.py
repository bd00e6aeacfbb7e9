"""One line per problem from a pydantic validation error, for the files people write by hand.

Used by the project configs (TOML) and compiler bundles (JSON): each problem names the dotted key,
says what is wrong in the file format's own words and shows the value; an unknown key lists the
allowed ones and suggests the closest. Formatting only: no I/O, nothing of ane_build imported.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SHOWN = 80


@dataclass(frozen=True)
class Syntax:
    """How a file format names its values in messages."""

    words: tuple[tuple[str, str], ...]
    mapping: str
    true: str = "true"
    false: str = "false"
    null: str = "null"


TOML = Syntax(
    words=(
        ("a valid dictionary", "a table"),
        ("a valid object", "a table"),
        ("an object", "a table"),
        ("a valid list", "an array"),
        ("a valid boolean", "true or false"),
        ("a valid integer", "an integer"),
        ("a valid number", "a number"),
        ("a valid string", "a string"),
    ),
    mapping="table",
)
JSON = Syntax(
    words=(
        ("a valid dictionary", "an object"),
        ("a valid list", "an array"),
        ("a valid boolean", "true or false"),
        ("a valid integer", "an integer"),
        ("a valid number", "a number"),
        ("a valid string", "a string"),
    ),
    mapping="object",
)

Loc = tuple[str | int, ...]


def problems(
    exc: ValidationError, data: Any, model: type[BaseModel], syntax: Syntax
) -> list[tuple[Loc, str]]:
    """Each error of ``exc`` as (key path in ``data``, message in the file format's words)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = clean_loc(err["loc"], data)
        out.append((loc, _describe(err, model, syntax)))
    return out


def clean_loc(loc: Iterable[str | int], data: Any) -> Loc:
    """Drop pydantic's validator tags (``function-after[...]``) that are not keys of the data."""
    clean: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part not in node and isinstance(part, str) and "[" in part:
                break
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            # A scalar is a leaf: whatever follows in ``loc`` names union members, not keys.
            break
        clean.append(part)
    return tuple(clean)


def _describe(err: Any, model: type[BaseModel], syntax: Syntax) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return unknown_key(err["loc"], model)
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = re.sub(r"^(Input|String|Value|List|Dictionary) should (be )?", r"must \2", message)
    # Validators written elsewhere say "expected an integer, found a boolean"; the value is
    # shown anyway, so keep the house style "must be ...".
    message = re.sub(r"^expected (.+?), (found|got) .*$", r"must be \1", message)
    # "a valid dictionary or instance of TileDescriptors": the class name means nothing in a file.
    message = re.sub(r" or instance of \w+", "", message)
    for pydantic_word, own_word in syntax.words:
        message = message.replace(pydantic_word, own_word)
    message = lower_first(message.rstrip("."))
    if kind == "literal_error":
        # pydantic quotes the choices Python-style; the files (and our "got" values) use ".
        message = re.sub(r"'([^']*)'", r'"\1"', message)
    if "input" in err:
        message += f" (got {show(err['input'], syntax)})"
    return message


def unknown_key(loc: Iterable[str | int], model: type[BaseModel]) -> str:
    """Name the allowed keys at ``loc`` (the path of the unknown one) and the closest match."""
    parts = list(loc)
    keyed = False  # the part before named a table of models: this part is its key
    for part in parts[:-1]:
        if keyed:
            keyed = False
            continue
        if not isinstance(part, str):
            break
        info = model.model_fields.get(part)
        sub = info.annotation if info is not None else None
        if get_origin(sub) is dict and get_args(sub):
            sub, keyed = get_args(sub)[-1], True
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            model = sub
    allowed = sorted(info.alias or name for name, info in model.model_fields.items())
    close = difflib.get_close_matches(str(parts[-1]), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key (allowed: {', '.join(allowed)}){hint}"


def dotted(loc: Iterable[str | int]) -> str:
    """A key path as written in TOML/JSON tools: ``artifacts.td_size``, ``a."b c"[2]``."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _BARE_KEY.fullmatch(part):
            parts.append(("." if parts else "") + part)
        else:
            parts.append(("." if parts else "") + json.dumps(part))
    return "".join(parts)


def show(value: Any, syntax: Syntax = TOML) -> str:
    """A value the way it would be written in the file, shortened."""
    if isinstance(value, bool):
        text = syntax.true if value else syntax.false
    elif value is None:
        text = syntax.null
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, Mapping):
        article = "an" if syntax.mapping[0] in "aeiou" else "a"
        text = f"{article} {syntax.mapping}" if value else f"an empty {syntax.mapping}"
    elif isinstance(value, list | tuple):
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > _MAX_SHOWN:
            text = f"an array of {len(value)} item(s)"
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def lower_first(text: str) -> str:
    """Lower the first letter of an ordinary word, keeping acronyms such as "TOML" intact."""
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text
