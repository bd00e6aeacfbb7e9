"""The ``ane.*`` metadata that makes an ONNX model an ANE container: read, verify, write."""

from .metadata import (
    AneModelMetadata,
    AnePayloads,
    ContainerVerificationError,
    VerifyReport,
    embed_ane_metadata,
    external_data_locations,
    parse_ane_metadata,
    read_ane_payloads,
    verify_container,
)

__all__ = [
    "AneModelMetadata",
    "AnePayloads",
    "ContainerVerificationError",
    "VerifyReport",
    "embed_ane_metadata",
    "external_data_locations",
    "parse_ane_metadata",
    "read_ane_payloads",
    "verify_container",
]
