"""latency: min, median and the nearest-rank p99 of run times."""

from __future__ import annotations

import pytest

from ane_build.errors import InvalidArgumentError
from ane_build.run.latency import latency


def test_figures_of_a_hundred_and_of_a_thousand_runs() -> None:
    hundred = latency([n / 1e3 for n in range(100, 0, -1)])  # 1..100 ms, in any order
    assert hundred == pytest.approx({"runs": 100, "min_ms": 1.0, "median_ms": 50.5, "p99_ms": 99.0})
    thousand = latency([n / 1e3 for n in range(1, 1001)])
    assert thousand["p99_ms"] == 990.0
    assert thousand["median_ms"] == pytest.approx(500.5)


def test_few_runs_take_the_slowest_as_p99_and_none_is_an_error() -> None:
    assert latency([0.002, 0.001, 0.003]) == pytest.approx(
        {"runs": 3, "min_ms": 1.0, "median_ms": 2.0, "p99_ms": 3.0}
    )
    with pytest.raises(InvalidArgumentError, match="no runs"):
        latency([])
