"""Running programs on an `ANEDevice`: buffers allocated once, submits, inputs and outputs."""

from .program import AneProgram, SubmitMode, SubmitResult, submit_onnx_model

__all__ = ["AneProgram", "SubmitMode", "SubmitResult", "submit_onnx_model"]
