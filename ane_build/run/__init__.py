"""Running programs on an `ANEDevice`: buffers allocated once, submits, inputs and outputs."""

from .model import AneModel, TensorInfo
from .program import AneProgram, StreamedPayload, SubmitMode, SubmitResult
from .submit import program_for, submit_onnx_model

__all__ = [
    "AneModel",
    "AneProgram",
    "StreamedPayload",
    "SubmitMode",
    "SubmitResult",
    "TensorInfo",
    "program_for",
    "submit_onnx_model",
]
