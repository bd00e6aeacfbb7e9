"""ane_build: build, verify and submit Apple Neural Engine ONNX containers on Asahi Linux.

The public API in one place, each name imported on first use: importing the package opens no
device, configures no logging and loads none of the heavy modules.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .artifacts import ArtifactSpec, ResolvedArtifacts, resolve_artifacts
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
    from .driver.device import ANEDevice, BufferObject, open_device
    from .driver.simulator import SimulatedKernel
    from .errors import (
        AneDeviceError,
        AneError,
        AneFormatError,
        ArtifactError,
        ConfigError,
        ContainerError,
        DescriptorChainError,
        DeviceNotFoundError,
        InputError,
        MetadataError,
        MissingAneMetadataError,
        SubmitValidationError,
        VerificationError,
        WireFormatError,
    )
    from .formats.payload import IoSlot, PayloadRef
    from .run import AneModel, AneProgram, SubmitMode, SubmitResult, submit_onnx_model

# Public name -> the module that defines it.
_EXPORTS = {
    "ANEDevice": "driver.device",
    "AneDeviceError": "errors",
    "AneError": "errors",
    "AneFormatError": "errors",
    "AneModel": "run",
    "AneModelMetadata": "container",
    "AnePayloads": "container",
    "AneProgram": "run",
    "ArtifactError": "errors",
    "ArtifactSpec": "artifacts",
    "BufferObject": "driver.device",
    "ConfigError": "errors",
    "ContainerError": "errors",
    "ConvertResult": "convert",
    "DescriptorChainError": "errors",
    "DeviceNotFoundError": "errors",
    "InputError": "errors",
    "IoSlot": "formats.payload",
    "MetadataError": "errors",
    "MissingAneMetadataError": "errors",
    "PayloadRef": "formats.payload",
    "ResolvedArtifacts": "artifacts",
    "SimulatedKernel": "driver.simulator",
    "SubmitMode": "run",
    "SubmitResult": "run",
    "SubmitValidationError": "errors",
    "VerificationError": "errors",
    "VerifyReport": "container",
    "WireFormatError": "errors",
    "convert_model": "convert",
    "embed_ane_metadata": "container",
    "open_device": "driver.device",
    "parse_ane_metadata": "container",
    "read_ane_payloads": "container",
    "resolve_artifacts": "artifacts",
    "submit_onnx_model": "run",
    "verify_container": "container",
}

try:
    __version__ = version("ane-build")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ANEDevice",
    "AneDeviceError",
    "AneError",
    "AneFormatError",
    "AneModel",
    "AneModelMetadata",
    "AnePayloads",
    "AneProgram",
    "ArtifactError",
    "ArtifactSpec",
    "BufferObject",
    "ConfigError",
    "ContainerError",
    "ConvertResult",
    "DescriptorChainError",
    "DeviceNotFoundError",
    "InputError",
    "IoSlot",
    "MetadataError",
    "MissingAneMetadataError",
    "PayloadRef",
    "ResolvedArtifacts",
    "SimulatedKernel",
    "SubmitMode",
    "SubmitResult",
    "SubmitValidationError",
    "VerificationError",
    "VerifyReport",
    "WireFormatError",
    "convert_model",
    "embed_ane_metadata",
    "open_device",
    "parse_ane_metadata",
    "read_ane_payloads",
    "resolve_artifacts",
    "submit_onnx_model",
    "verify_container",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use (keeps ``import ane_build`` cheap)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ane_build' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
