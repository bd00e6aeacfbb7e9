"""The model inside a container: every top-level field but the metadata entries.

What onnx and onnxruntime need to load the graph of a container without reading its payloads
(which can be most of a multi-GB file). Reads the fields it keeps, seeks past the rest; it must
not parse the graph itself or open external data.
"""

from __future__ import annotations

from ..formats import protowire as pw
from .scan import ModelSource, open_model, scan_container


def model_without_metadata(model: ModelSource) -> bytes:
    """The serialized ModelProto of ``model`` with its ``metadata_props`` left out.

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed.
    """
    with open_model(model) as (stream, label):
        scan = scan_container(stream, label)
        kept = [f for f in scan.fields if f.number != pw.MODEL_METADATA_PROPS]
        return b"".join(pw.read_range(stream, f.offset, f.end - f.offset) for f in kept)
