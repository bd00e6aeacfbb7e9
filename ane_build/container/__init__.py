"""The ``ane.*`` metadata that makes an ONNX model an ANE container: read, verify, write."""

from .external import external_data_locations
from .metadata import parse_ane_metadata, read_ane_payloads
from .types import AneModelMetadata, AnePayloads, ContainerVerificationError, VerifyReport
from .verify import verify_container
from .writer import embed_ane_metadata

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
