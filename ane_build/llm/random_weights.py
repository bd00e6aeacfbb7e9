"""Random weights for a checkpoint folder's ``config.json`` (the example project's tiny LLaMA).

Writes one safetensors file of fp16 weights with the names and shapes the config implies, seeded
and scaled so activations stay well inside fp16's range. Random weights, not a trained model. This
module must not write or change the config: the config is the source.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .safetensors import write_safetensors
from .spec import LlamaSpec


def random_weights(spec: LlamaSpec, seed: int = 0) -> dict[str, npt.NDArray[np.float16]]:
    """Seeded random fp16 weights for ``spec``, by checkpoint name.

    Norm weights are near 1; every matrix is normal with a ``1/sqrt(fan_in)`` scale.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec.weight_shapes().items():
        if len(shape) == 1:
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            values = rng.standard_normal(shape) / math.sqrt(shape[-1])
        out[name] = values.astype(np.float16)
    return out


def write_random_weights(checkpoint: Path, path: Path, seed: int = 0) -> Path:
    """Write random weights for ``checkpoint/config.json`` to ``path`` (atomically).

    Raises:
        CheckpointError: The config is missing, unreadable or unsupported.
        FileAccessError: The file cannot be written (nothing is left behind).
    """
    spec = LlamaSpec.from_dir(checkpoint)
    note = {"format": "pt", "ane_build": f"random weights, seed {seed} (not a trained model)"}
    write_safetensors(path, random_weights(spec, seed), metadata=note)
    return path
