"""Latency figures of repeated runs: count, min, median and p99 (nearest rank), in milliseconds.

Pure arithmetic on seconds already measured; this module must not run or time anything itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..errors import InvalidArgumentError


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """``runs``, ``min_ms``, ``median_ms`` and ``p99_ms`` of run times given in seconds.

    p99 is the nearest-rank 99th percentile: the smallest time at least 99 % of the runs took
    no longer than (the slowest run when there are fewer than 100).

    Raises:
        InvalidArgumentError: ``seconds`` is empty.
    """
    if not seconds:
        raise InvalidArgumentError("latency of no runs: time at least one")
    ordered = sorted(seconds)
    p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
    return {
        "runs": len(ordered),
        "min_ms": ordered[0] * 1e3,
        "median_ms": statistics.median(ordered) * 1e3,
        "p99_ms": p99 * 1e3,
    }
