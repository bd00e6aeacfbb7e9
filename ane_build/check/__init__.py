"""Did the compiled program compute the right thing: reference runs, test data, comparisons.

Importing this package is cheap: onnx and onnxruntime are imported by the functions that use them.
"""

from ..container.graph import TensorSpec, graph_io
from .compare import DEFAULT_TOLERANCE, CheckReport, OutputReport, Tolerance, compare
from .inputs import (
    load_arrays,
    random_inputs,
    read_test_data,
    resolve_inputs,
    save_arrays,
    to_engine,
)
from .model import ModelCheck, check_model
from .reference import Reference, reference_outputs

__all__ = [
    "DEFAULT_TOLERANCE",
    "CheckReport",
    "ModelCheck",
    "OutputReport",
    "Reference",
    "TensorSpec",
    "Tolerance",
    "check_model",
    "compare",
    "graph_io",
    "load_arrays",
    "random_inputs",
    "read_test_data",
    "reference_outputs",
    "resolve_inputs",
    "save_arrays",
    "to_engine",
]
