"""External data files of a source model, and whether an output elsewhere still finds them.

Parses the graph with onnx without opening data files; used only when the output moves folders.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .._typing import StrPath
from ..errors import ContainerError, WireFormatError
from .graph import model_without_metadata


def safe_location(location: str) -> bool:
    """Whether an external data location stays inside the model's folder (no root, no ``..``)."""
    for flavour in (PurePosixPath, PureWindowsPath):
        path = flavour(location)
        if path.is_absolute() or path.anchor or ".." in path.parts:
            return False
    return bool(location)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = list(attr.sparse_tensors)
        if attr.HasField("sparse_tensor"):
            sparse.append(attr.sparse_tensor)
        for item in sparse:
            yield item.values
            yield item.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def external_data_locations(source: StrPath) -> list[str]:
    """Locations of every external-data tensor of a model, as written in it.

    Parses the graph (the data files are not opened, nor the metadata entries read), so the cost
    grows with the graph; `embed_ane_metadata` calls it only when the output goes to another
    folder.

    Raises:
        ContainerError: The graph cannot be parsed.
        ModelFileError: The model cannot be read.
    """
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        model = onnx.ModelProto.FromString(model_without_metadata(source))
    except (DecodeError, WireFormatError) as exc:
        raise ContainerError(f"{source}: the graph cannot be parsed: {exc}") from exc
    tensors: list[Any] = list(_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_node_tensors(node))
    for info in model.training_info:
        tensors.extend(_graph_tensors(info.initialization))
        tensors.extend(_graph_tensors(info.algorithm))
    locations: set[str] = set()
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(str(e.value) for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def check_external_data(source: Path, output: Path) -> None:
    """Refuse an output in another folder whose external data files would not resolve."""
    source_dir = os.path.realpath(os.path.dirname(os.path.abspath(source)))
    output_dir = os.path.realpath(os.path.dirname(os.path.abspath(output)))
    if source_dir == output_dir:
        return
    locations = external_data_locations(source)
    unsafe = [loc for loc in locations if not safe_location(loc)]
    if unsafe:
        raise ContainerError(
            f"{source}: external data locations must be relative paths inside the model's "
            f"folder, but the model names {', '.join(map(repr, unsafe))}; re-save the model "
            "with onnx.save(..., save_as_external_data=True, location=NAME)"
        )
    problems = [
        problem
        for loc in locations
        if (problem := _external_file_problem(os.path.join(output_dir, loc), loc))
    ]
    if problems:
        raise ContainerError(
            f"{output}: the model keeps tensors in external data files that would not load next "
            f"to the output: {'; '.join(problems)}. Write the output into {source_dir} (next to "
            f"the source), or copy the data files into {output_dir} (onnx refuses external data "
            "reached through a symbolic or hard link)"
        )


def _external_file_problem(path: str, location: str) -> str | None:
    """What onnx's loader would object to in an external data file, or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return f"{location!r} does not exist"
    if stat.S_ISLNK(info.st_mode):
        return f"{location!r} is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return f"{location!r} is not a regular file"
    if info.st_nlink > 1:
        return f"{location!r} has {info.st_nlink} hard links"
    return None
