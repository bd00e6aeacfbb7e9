"""The .npz archives a check writes and reads: named arrays plus optional JSON members.

Written by hand with `zipfile` so any tensor name works as a key (``np.savez`` reserves ``file``
and ``allow_pickle``) and never through pickle. Files go through the one atomic writer; this
module must not write any other way.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._fs import open_regular, write_atomic
from ..errors import InputError

ARRAY_SUFFIX = ".npy"


def write_npz(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    *,
    members: Mapping[str, Any] | None = None,
) -> None:
    """Replace ``path`` with an .npz of ``arrays`` and JSON ``members`` (names not ending .npy).

    Raises:
        InputError: An array holds Python objects (which would need pickle).
        FileAccessError: The file or its folder cannot be written.
    """
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise InputError(f"{path}: array {name!r} holds Python objects; cannot save it")
    # Built in memory: the arrays are in memory already, and write_atomic makes the folder.
    image = io.BytesIO()
    with zipfile.ZipFile(image, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(name + ARRAY_SUFFIX, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        for name, value in (members or {}).items():
            archive.writestr(name, json.dumps(value))
    write_atomic(path, image.getvalue())


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays (in archive order) and JSON members of an .npz file.

    Raises:
        InputError: The file is not an .npz archive, or a member is damaged or pickled.
    """
    with open_regular(path, "array file", InputError) as stream:
        try:
            return _read(stream)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
            raise InputError(f"{path}: not a readable .npz archive: {exc}") from exc


def _read(stream: IO[bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    members: dict[str, Any] = {}
    with zipfile.ZipFile(stream) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                if info.filename.endswith(ARRAY_SUFFIX):
                    name = info.filename[: -len(ARRAY_SUFFIX)]
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                else:
                    members[info.filename] = json.loads(member.read())
    return arrays, members
