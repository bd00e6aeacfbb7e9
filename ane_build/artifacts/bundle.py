"""JSON bundles of compiler output, in the format of the fork's own Python helper (the seed's).

```json
{"microcode_b64": "...", "weights_b64": "...",
 "tile_descriptors": {"b64": "...", "entry_size": 628, "count": 2},
 "td_size": 628, "td_count": "2", "toolchain": "...", "io": {"4": {...}}}
```

``td_size``/``td_count`` are integers or decimal strings, at the top level or as
``tile_descriptors.entry_size``/``count`` (both given: they must agree). ``toolchain`` and ``io``
are ours, optional. Base64 is read by the kernel's own rules. Unknown keys are errors that name
the closest known key. A bundle path may be a folder holding ``bundle.json``. Reads one file;
writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import _validation as v
from .._fs import open_regular
from .._typing import StrPath
from ..driver.kernel_onnx import decode_base64
from ..errors import ArtifactError, Base64Error
from .spec import TensorSlot, check_slots

BUNDLE_FILE = "bundle.json"


def _number(value: object) -> object:
    """An integer, or a string of decimal digits as the seed's writer puts it."""
    if isinstance(value, bool | float):
        raise ValueError(f"expected an integer, found {v.show(value, v.JSON)}")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"expected an integer or a string of decimal digits, found {value!r}")
        return int(value)
    return value


class TileDescriptors(BaseModel):
    """``tile_descriptors``: the descriptor payload and the parameters it states."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    b64: str
    entry_size: int | None = Field(default=None, gt=0)
    count: int | None = Field(default=None, gt=0)

    _numbers = field_validator("entry_size", "count", mode="before")(_number)


class BundleDocument(BaseModel):
    """The JSON document of a bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    microcode_b64: str
    weights_b64: str | None = None
    tile_descriptors: TileDescriptors | None = None
    td_size: int | None = Field(default=None, gt=0)
    td_count: int | None = Field(default=None, gt=0)
    toolchain: str | None = None
    io: dict[int, TensorSlot] | None = None

    _numbers = field_validator("td_size", "td_count", mode="before")(_number)
    _slots = field_validator("io", mode="after")(check_slots)

    @field_validator("tile_descriptors", mode="before")
    @classmethod
    def _descriptor_object(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                'must be an object {"b64": ..., "entry_size": N, "count": N} (a bare base64 '
                "string was an older ane_build form)"
            )
        return value


@dataclass(frozen=True)
class Bundle:
    """A decoded JSON bundle.

    Attributes:
        path: The ``bundle.json`` file.
        microcode: Decoded microcode.
        weights: Decoded weights, if any.
        tile_descriptors: Decoded tile descriptors, if any.
        td_size: Stated first-descriptor size (``td_size`` or ``tile_descriptors.entry_size``).
        td_count: Stated descriptor count (``td_count`` or ``tile_descriptors.count``).
        toolchain: Free text naming the compiler.
        io: Tensor slots, when the bundle declares them.
    """

    path: Path
    microcode: bytes
    weights: bytes | None = None
    tile_descriptors: bytes | None = None
    td_size: int | None = None
    td_count: int | None = None
    toolchain: str | None = None
    io: dict[int, TensorSlot] | None = None


def bundle_file(path: StrPath) -> Path:
    """Return the ``bundle.json`` a bundle path names (the path itself, or the file in a folder).

    A path that does not exist yet names a folder unless it ends in ``.json``, so the answer is
    the same before and after the compiler writes its output.
    """
    path = Path(path)
    if path.is_dir() or (not path.exists() and path.suffix.lower() != ".json"):
        return path / BUNDLE_FILE
    return path


def _read(path: Path) -> tuple[Path, Any]:
    file = bundle_file(path)
    if file != path and not file.exists():
        if not path.is_dir():
            # Not a folder at all (missing, a dangling symlink, a loop): open says which.
            open_regular(path, "bundle", ArtifactError).close()
        raise ArtifactError(f"bundle {path}: folder has no {BUNDLE_FILE}")
    with open_regular(file, "bundle", ArtifactError) as f:
        try:
            raw = f.read()
        except OSError as exc:
            raise ArtifactError(f"bundle {file}: cannot read: {exc.strerror or exc}") from exc
    try:
        return file, json.loads(raw)
    except RecursionError as exc:
        raise ArtifactError(f"bundle {file}: invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"bundle {file}: invalid JSON: {exc}") from exc


def _document(file: Path, doc: Any) -> BundleDocument:
    if not isinstance(doc, dict):
        shown = v.show(doc, v.JSON)
        raise ArtifactError(f"bundle {file}: the top level must be a JSON object (got {shown})")
    try:
        return BundleDocument.model_validate(doc)
    except ValidationError as exc:
        lines = [
            f"bundle {file}: {v.dotted(loc) or '(top level)'}: {message}"
            for loc, message in v.problems(exc, doc, BundleDocument, v.JSON)
        ]
        raise ArtifactError("\n".join(lines)) from exc


def _decode(file: Path, key: str, text: str) -> bytes:
    try:
        return decode_base64(text.encode("utf-8"))
    except Base64Error as exc:
        raise ArtifactError(
            f"bundle {file}: {key}: not base64 as the kernel reads it: {exc}"
        ) from exc


def _stated(file: Path, doc: BundleDocument) -> tuple[int | None, int | None]:
    td_size, td_count = doc.td_size, doc.td_count
    tds = doc.tile_descriptors
    if tds is not None:
        for name, top, inner, key in (
            ("td_size", td_size, tds.entry_size, "entry_size"),
            ("td_count", td_count, tds.count, "count"),
        ):
            if top is not None and inner is not None and top != inner:
                raise ArtifactError(
                    f"bundle {file}: {name} is {top} but tile_descriptors.{key} is {inner}"
                )
        td_size = td_size if td_size is not None else tds.entry_size
        td_count = td_count if td_count is not None else tds.count
    return td_size, td_count


def load_bundle(path: StrPath) -> Bundle:
    """Load and decode a JSON bundle (see the module docstring for the format).

    Args:
        path: The bundle file, or a folder holding ``bundle.json``.

    Raises:
        ArtifactError: The file cannot be read, is not JSON, has an unknown key (named with the
            closest known one), a field of the wrong type, base64 the kernel would refuse, or
            parameters that contradict each other (the message names the file and the field).
    """
    file, raw = _read(Path(path))
    doc = _document(file, raw)
    microcode = _decode(file, "microcode_b64", doc.microcode_b64)
    if not microcode:
        raise ArtifactError(f"bundle {file}: microcode_b64 decodes to no bytes")
    weights = _decode(file, "weights_b64", doc.weights_b64) if doc.weights_b64 else None
    tds = doc.tile_descriptors
    descriptors = _decode(file, "tile_descriptors.b64", tds.b64) if tds else None
    td_size, td_count = _stated(file, doc)
    return Bundle(
        path=file,
        microcode=microcode,
        weights=weights or None,
        tile_descriptors=descriptors or None,
        td_size=td_size,
        td_count=td_count,
        toolchain=doc.toolchain,
        io=doc.io,
    )
