"""Output faults the simulator can inject, so every check can be shown to catch what it must.

Each fault corrupts the fp16 outputs of a simulated submit the way a broken compiler or engine
would: ``bitflip`` (one high bit of one element), ``zero`` (an output left zero), ``stride``
(written with a wrong stride: the plane stride when there are several planes, else the row stride
when there are several rows, else the element stride), ``swap`` (two output slots exchanged, when
there are two), ``nan`` (one NaN), ``scale`` (every element x1.01) and ``ulp`` (+-1 ulp noise on
every element, which a check must let pass). A testing aid for the simulator only: hardware
results are never touched. Pure numpy over arrays; no devices.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ...errors import InvalidArgumentError

FAULTS = ("bitflip", "zero", "stride", "swap", "nan", "scale", "ulp")
# The environment variable CLI and doit runs read faults from (a comma list of FAULTS).
FAULTS_ENV = "ANE_BUILD_SIM_FAULTS"
# Bit 14 is the top exponent bit of an IEEE half: flipping it changes any value drastically.
_HIGH_BIT = np.uint16(1 << 14)
_SEED = 0xFA17

Outputs = dict[int, npt.NDArray[np.float16]]


def check_faults(names: Iterable[str]) -> tuple[str, ...]:
    """The fault names, validated.

    Raises:
        InvalidArgumentError: A name is not one of `FAULTS` (the message lists them).
    """
    chosen = tuple(name.strip() for name in names if name.strip())
    unknown = [name for name in chosen if name not in FAULTS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown simulator output fault(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(FAULTS)}"
        )
    return chosen


def faults_from_env(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The faults `FAULTS_ENV` names (none when it is unset or empty)."""
    return check_faults(environ.get(FAULTS_ENV, "").split(","))


def _element(array: npt.NDArray[np.float16]) -> int:
    # The middle element: deterministic, and inside any real tensor's data.
    return array.size // 2


def _bits(array: npt.NDArray[np.float16]) -> npt.NDArray[np.uint16]:
    return array.reshape(-1).view(np.uint16)


def apply_value_faults(faults: Sequence[str], outputs: Outputs) -> Outputs:
    """Apply the faults that change values (all but ``stride``) to copies of ``outputs``."""
    if not faults:
        return outputs
    out = {slot: np.array(value, dtype=np.float16, copy=True) for slot, value in outputs.items()}
    slots = sorted(out)
    rng = np.random.default_rng(_SEED)
    for fault in faults:
        for slot in slots:
            value = out[slot]
            if value.size == 0:
                continue
            bits = _bits(value)
            if fault == "bitflip":
                bits[_element(value)] ^= _HIGH_BIT
            elif fault == "zero":
                value[...] = 0
            elif fault == "nan":
                value.reshape(-1)[_element(value)] = np.nan
            elif fault == "scale":
                value[...] = (value.astype(np.float32) * 1.01).astype(np.float16)
            elif fault == "ulp":
                _nudge(bits, rng)
        if fault == "swap" and len(slots) >= 2:
            first, second = slots[0], slots[1]
            if out[first].shape == out[second].shape:
                out[first], out[second] = out[second], out[first]
            else:
                out[first], out[second] = _swap_data(out[first], out[second])
    return out


def _nudge(bits: npt.NDArray[np.uint16], rng: np.random.Generator) -> None:
    """Move every finite, non-zero value one representable fp16 step up or down."""
    step = rng.choice(np.array([-1, 1], dtype=np.int32), size=bits.size)
    magnitude = (bits & 0x7FFF).astype(np.int32)
    finite = (magnitude > 0) & (magnitude < 0x7C00)
    # On the magnitude: +1 moves away from zero, -1 towards it, whatever the sign; a step that
    # would reach zero or infinity is not taken.
    moved = np.clip(magnitude + step, 1, 0x7BFF)
    bits[finite] = (bits[finite] & 0x8000) | moved[finite].astype(np.uint16)


def _swap_data(
    a: npt.NDArray[np.float16], b: npt.NDArray[np.float16]
) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.float16]]:
    """Exchange the contents of two outputs of different shapes, as far as each has room."""
    flat_a, flat_b = a.reshape(-1).copy(), b.reshape(-1).copy()
    n = min(flat_a.size, flat_b.size)
    flat_a[:n], flat_b[:n] = b.reshape(-1)[:n], a.reshape(-1)[:n]
    return flat_a.reshape(a.shape), flat_b.reshape(b.shape)


def wrong_strides(
    dims: tuple[int, int, int, int], row_stride: int, plane_stride: int
) -> tuple[int, int, int]:
    """The (element, row, plane) strides of a ``stride`` fault: one of them off by 64 bytes.

    The first stride the tensor actually uses is the wrong one, so the fault always shows: the
    plane stride with several planes, else the row stride with several rows, else the element
    stride (two elements apart instead of one).
    """
    n, c, h, _ = dims
    if n * c > 1:
        return 2, row_stride, plane_stride + 64
    if h > 1:
        return 2, row_stride + 64, plane_stride
    return 4, row_stride * 2, plane_stride * 2
