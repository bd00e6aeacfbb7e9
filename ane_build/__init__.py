"""ane_build: build, verify and submit Apple Neural Engine ONNX containers on Asahi Linux.

The public API in one place, imported on first use. Importing the package opens no device,
configures no logging and loads none of the heavy modules.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "ANEDevice": "device",
    "AneDeviceError": "errors",
    "AneError": "errors",
    "AneModelMetadata": "container",
    "AnePayloads": "container",
    "AneProgram": "submit",
    "ArtifactSpec": "artifacts",
    "BufferObject": "device",
    "ConvertResult": "convert",
    "DeviceNotFoundError": "errors",
    "MissingAneMetadataError": "errors",
    "SimulatedKernel": "simulator",
    "SubmitResult": "submit",
    "VerifyReport": "container",
    "convert_model": "convert",
    "embed_ane_metadata": "container",
    "open_device": "device",
    "parse_ane_metadata": "container",
    "read_ane_payloads": "container",
    "resolve_artifacts": "artifacts",
    "submit_onnx_model": "submit",
    "verify_container": "container",
}


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use (keeps ``import ane_build`` cheap)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ane_build' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
