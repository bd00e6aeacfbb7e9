"""ane_build: build, verify and submit Apple Neural Engine ONNX containers on Asahi Linux.

The public API in one place. Importing it opens no device and configures no logging.
"""

from .artifacts import ArtifactSpec, resolve_artifacts
from .container import (
    AneModelMetadata,
    AnePayloads,
    VerifyReport,
    embed_ane_metadata,
    parse_ane_metadata,
    read_ane_payloads,
    verify_container,
)
from .convert import ConvertResult, convert_model
from .device import ANEDevice, BufferObject, open_device
from .errors import (
    AneDeviceError,
    AneError,
    DeviceNotFoundError,
    MissingAneMetadataError,
)
from .simulator import SimulatedKernel
from .submit import AneProgram, SubmitResult, submit_onnx_model

__version__ = "0.1.0"

__all__ = [
    "ANEDevice",
    "AneDeviceError",
    "AneError",
    "AneModelMetadata",
    "AnePayloads",
    "AneProgram",
    "ArtifactSpec",
    "BufferObject",
    "ConvertResult",
    "DeviceNotFoundError",
    "MissingAneMetadataError",
    "SimulatedKernel",
    "SubmitResult",
    "VerifyReport",
    "convert_model",
    "embed_ane_metadata",
    "open_device",
    "parse_ane_metadata",
    "read_ane_payloads",
    "resolve_artifacts",
    "submit_onnx_model",
    "verify_container",
]
