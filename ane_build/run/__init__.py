"""Running programs on an `ANEDevice`: buffers allocated once, submits, inputs and outputs."""

from .program import AneProgram, StreamedPayload, SubmitMode, SubmitResult
from .submit import program_for, submit_onnx_model

__all__ = [
    "AneProgram",
    "StreamedPayload",
    "SubmitMode",
    "SubmitResult",
    "program_for",
    "submit_onnx_model",
]
