"""Numeric comparison of engine outputs with reference outputs: metrics, the pass rule, reports.

Pure numpy over whole arrays (no Python loop over elements); it must not run models or read
files. The rule and the defaults are explained in docs/checking.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..formats.tiling import strip_leading_ones


@dataclass(frozen=True)
class Tolerance:
    """An element passes when ``|ane - ref| <= atol + rtol * |ref|`` (numpy's allclose rule).

    Raises:
        InputError: ``atol`` or ``rtol`` is negative or not finite.
    """

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        for field, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"tolerance {field}: must be finite and >= 0, got {value}")


# 2**-10 absolute: one fp16 step at 1.0, above the largest subnormal the engine flushes to zero
# (6.1e-5) and the rounding noise of sums that cancel to about zero. 2**-8 relative: 4 to 8 fp16
# steps, so output rounding plus 1 ulp of noise (1.5 * 2**-10 at worst) passes and a 1 % scale
# error on values above about 0.2 fails. Both are powers of two: bounds are exact in fp16.
DEFAULT_TOLERANCE = Tolerance(atol=2.0**-10, rtol=2.0**-8)


@dataclass(frozen=True)
class OutputReport:
    """How one output compares.

    Errors (``max_abs``, ``max_rel``, ``mean_abs``) and ``cosine`` are over the elements where
    both values are finite; NaN and infinity disagreements are counted apart. ``max_rel`` skips
    elements whose reference is exactly 0 (their error is in ``max_abs``). When ``problem`` is
    set (missing, extra, shape or dtype), nothing was measured: the metrics are NaN.

    Attributes:
        name: The output's name.
        shape: The reference's shape (the engine's for an extra output).
        max_abs: Largest ``|ane - ref|``.
        max_rel: Largest ``|ane - ref| / |ref|``.
        mean_abs: Mean ``|ane - ref|``.
        cosine: Cosine similarity of the two as vectors: 1.0 when both are all zeros, 0.0 when
            only one is.
        within: Share of elements that pass the rule, 0..1 (1.0 for an empty tensor).
        nan_mismatches: Elements that are NaN on one side only.
        inf_mismatches: Elements infinite on one side, or with opposite infinities, neither NaN.
        worst_index: Index (in the reference's shape) of the element furthest outside its
            tolerance (relative to it), or closest to it when all pass; None when nothing was
            compared.
        worst_value: The engine's value there.
        worst_reference: The reference's value there.
        tolerance: The tolerance applied.
        passed: No problem and every element within tolerance.
        problem: Why the output could not be compared, or None.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    within: float
    nan_mismatches: int
    inf_mismatches: int
    worst_index: tuple[int, ...] | None
    worst_value: float | None
    worst_reference: float | None
    tolerance: Tolerance
    passed: bool
    problem: str | None = None

    def line(self) -> str:
        """One line for people: verdict, name, errors, cosine, share within, worst element."""
        head = f"{'PASS' if self.passed else 'FAIL'} {self.name}"
        if self.problem is not None:
            return f"{head}: {self.problem}"
        parts = [
            f"max abs {_num(self.max_abs)} rel {_num(self.max_rel)}",
            f"cos {self.cosine:.6f}",
            f"within {_percent(self.within)}",
        ]
        if self.nan_mismatches or self.inf_mismatches:
            parts.append(f"{self.nan_mismatches} NaN / {self.inf_mismatches} inf mismatches")
        if self.worst_index is not None:
            parts.append(f"worst {_worst_text(self)}")
        tol = f"(atol {_num(self.tolerance.atol)} rtol {_num(self.tolerance.rtol)})"
        return f"{head}: {', '.join(parts)} {tol}"

    def to_json(self) -> dict[str, Any]:
        """This report as JSON-safe values (see `CheckReport.to_json`)."""
        return {
            "name": self.name,
            "passed": self.passed,
            "problem": self.problem,
            "shape": list(self.shape),
            "max_abs": _json_float(self.max_abs),
            "max_rel": _json_float(self.max_rel),
            "mean_abs": _json_float(self.mean_abs),
            "cosine": _json_float(self.cosine),
            "within": _json_float(self.within),
            "nan_mismatches": self.nan_mismatches,
            "inf_mismatches": self.inf_mismatches,
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "worst_value": _json_float(self.worst_value),
            "worst_reference": _json_float(self.worst_reference),
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
        }


def _num(value: float) -> str:
    return f"{value:.3e}"


def _percent(share: float) -> str:
    # Rounded down, so an output with a single failing element never shows 100.00 %.
    return f"{math.floor(share * 10000) / 100:.2f}%"


def _worst_text(report: OutputReport) -> str:
    index = ",".join(map(str, report.worst_index or ()))
    return f"[{index}] ane {report.worst_value:.6g} ref {report.worst_reference:.6g}"


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


@dataclass(frozen=True)
class CheckReport:
    """The comparison of every output; passes when there is one and all pass."""

    outputs: tuple[OutputReport, ...]

    @property
    def passed(self) -> bool:
        """Whether there is at least one output and every output passed."""
        return bool(self.outputs) and all(report.passed for report in self.outputs)

    @property
    def worst(self) -> OutputReport | None:
        """The failing output with the largest max abs error, else the passing one with it.

        A failure without a measured error (missing, shape, NaN/inf mismatches) ranks highest.
        None when there are no outputs.
        """
        if not self.outputs:
            return None

        def severity(report: OutputReport) -> tuple[bool, float]:
            unmeasured = report.problem is not None or math.isnan(report.max_abs)
            mismatched = report.nan_mismatches + report.inf_mismatches > 0
            error = math.inf if unmeasured or mismatched else report.max_abs
            return (not report.passed, error)

        return max(self.outputs, key=severity)

    def table(self) -> str:
        """Aligned columns, one row per output, a header first."""
        header = ("", "output", "shape", "max abs", "max rel", "mean abs", "cosine", "within")
        rows = [(*header, "nan", "inf", "worst")]
        for r in self.outputs:
            status = "PASS" if r.passed else "FAIL"
            if r.problem is not None:
                rows.append((status, r.name, _shape(r.shape), *("-",) * 7, r.problem))
                continue
            worst = _worst_text(r) if r.worst_index is not None else "-"
            rows.append(
                (
                    status,
                    r.name,
                    _shape(r.shape),
                    _num(r.max_abs),
                    _num(r.max_rel),
                    _num(r.mean_abs),
                    f"{r.cosine:.6f}",
                    _percent(r.within),
                    str(r.nan_mismatches),
                    str(r.inf_mismatches),
                    worst,
                )
            )
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-safe data.

        Schema: ``{"passed": bool, "worst": name | null, "outputs": [output, ...]}``; each output
        has ``name``, ``passed``, ``problem`` (string or null), ``shape`` (list), ``max_abs``,
        ``max_rel``, ``mean_abs``, ``cosine``, ``within``, ``nan_mismatches``,
        ``inf_mismatches``, ``worst_index`` (list or null), ``worst_value``,
        ``worst_reference`` (number or null) and ``tolerance`` (``{"atol", "rtol"}``). Numbers
        that JSON cannot hold are strings: ``"nan"``, ``"inf"``, ``"-inf"``.
        """
        worst = self.worst
        return {
            "passed": self.passed,
            "worst": None if worst is None else worst.name,
            "outputs": [report.to_json() for report in self.outputs],
        }


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _unmeasured(
    name: str, shape: tuple[int, ...], tolerance: Tolerance, problem: str
) -> OutputReport:
    nan = math.nan
    return OutputReport(
        name, shape, nan, nan, nan, nan, 0.0, 0, 0, None, None, None, tolerance, False, problem
    )


def _comparable(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf"


def _cosine(a: np.ndarray, r: np.ndarray) -> float:
    norm_a, norm_r = float(np.linalg.norm(a)), float(np.linalg.norm(r))
    if norm_a == 0.0 or norm_r == 0.0:
        return 1.0 if norm_a == norm_r else 0.0
    return float(np.clip(np.dot(a, r) / (norm_a * norm_r), -1.0, 1.0))


def _worst(
    error: np.ndarray, bound: np.ndarray, finite: np.ndarray, agree: np.ndarray
) -> int | None:
    """Flat index of the element furthest outside its tolerance, relative to it; None if empty."""
    if not error.size:
        return None
    over = np.zeros(error.shape)
    np.divide(error, bound, out=over, where=finite & (bound > 0))
    # A zero bound (atol 0, reference 0) allows nothing; non-finite disagreements rank first.
    over[finite & (bound == 0) & (error > 0)] = np.inf
    over[~finite & ~agree] = np.inf
    return int(np.argmax(over))


def _measure(name: str, ane: np.ndarray, ref: np.ndarray, tolerance: Tolerance) -> OutputReport:
    """Metrics of two float64 arrays of the same shape."""
    a, r = ane.reshape(-1), ref.reshape(-1)
    nan_a, nan_r = np.isnan(a), np.isnan(r)
    finite = np.isfinite(a) & np.isfinite(r)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(a - r)
        bound = tolerance.atol + tolerance.rtol * np.abs(r)
    # Outside the finite pairs only equal values agree: the same infinity, or NaN on both sides.
    agree = (nan_a & nan_r) | (np.isinf(a) & (a == r))
    ok = np.where(finite, error <= bound, agree)
    e, rf = error[finite], np.abs(r[finite])
    nonzero = rf > 0
    worst = _worst(error, bound, finite, agree)
    return OutputReport(
        name=name,
        shape=ref.shape,
        max_abs=float(e.max()) if e.size else 0.0,
        max_rel=float((e[nonzero] / rf[nonzero]).max()) if nonzero.any() else 0.0,
        mean_abs=float(e.mean()) if e.size else 0.0,
        cosine=_cosine(a[finite], r[finite]),
        within=float(ok.mean()) if a.size else 1.0,
        nan_mismatches=int(np.count_nonzero(nan_a != nan_r)),
        inf_mismatches=int(
            np.count_nonzero((np.isinf(a) | np.isinf(r)) & ~agree & ~nan_a & ~nan_r)
        ),
        worst_index=None if worst is None else tuple(map(int, np.unravel_index(worst, ref.shape))),
        worst_value=None if worst is None else float(a[worst]),
        worst_reference=None if worst is None else float(r[worst]),
        tolerance=tolerance,
        passed=bool(ok.all()),
    )


def compare_output(
    name: str, ane: np.ndarray, reference: np.ndarray, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> OutputReport:
    """Compare one output; shapes may differ by leading 1s (the same NCHW tensor)."""
    a, r = np.asarray(ane), np.asarray(reference)
    for side, value in (("ANE", a), ("reference", r)):
        if not _comparable(value):
            return _unmeasured(
                name, r.shape, tolerance, f"{side} dtype {value.dtype} cannot be compared"
            )
    if a.shape != r.shape and strip_leading_ones(a.shape) != strip_leading_ones(r.shape):
        return _unmeasured(
            name, r.shape, tolerance, f"shape {a.shape} (ANE) vs {r.shape} (reference)"
        )
    return _measure(name, a.astype(np.float64).reshape(r.shape), r.astype(np.float64), tolerance)


def compare(
    ane: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    per_output: Mapping[str, Tolerance] | None = None,
) -> CheckReport:
    """Compare every output of the engine with the reference, in float64.

    Args:
        ane: Output name -> what the engine produced.
        reference: Output name -> the reference value.
        tolerance: The tolerance of every output without an override.
        per_output: Overrides by output name.

    Returns:
        One report per reference output in its order, then one per extra engine output. A
        missing or extra output fails, naming itself.

    Raises:
        InputError: ``per_output`` names an output neither side has.
    """
    overrides = dict(per_output or {})
    unknown = sorted(set(overrides) - set(ane) - set(reference))
    if unknown:
        raise InputError(
            f"tolerance overrides for outputs that do not exist: {', '.join(map(repr, unknown))}; "
            f"outputs are {', '.join(map(repr, reference)) or 'none'}"
        )
    reports = []
    for name, ref in reference.items():
        tol = overrides.get(name, tolerance)
        if name in ane:
            reports.append(compare_output(name, ane[name], ref, tol))
        else:
            reports.append(_unmeasured(name, np.shape(ref), tol, "missing from the ANE outputs"))
    for name, value in ane.items():
        if name not in reference:
            reports.append(
                _unmeasured(
                    name,
                    np.shape(value),
                    overrides.get(name, tolerance),
                    "not an output of the reference",
                )
            )
    return CheckReport(tuple(reports))
