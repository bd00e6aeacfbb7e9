"""compare: each metric against hand-worked values, the pass rule at its edge, NaN/Inf, faults."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ane_build.check.compare import (
    DEFAULT_TOLERANCE,
    CheckReport,
    OutputReport,
    Tolerance,
    compare,
)
from ane_build.check.inputs import random_inputs
from ane_build.check.reference import reference_outputs
from ane_build.container.graph import graph_io
from ane_build.errors import InputError
from ane_build.formats.tiling import layout_for, tile, untile
from tests.helpers import save_model, three_outputs_model

LOOSE = Tolerance(atol=0.01, rtol=0.1)


def one(ane: object, ref: object, tolerance: Tolerance = DEFAULT_TOLERANCE) -> OutputReport:
    report = compare({"y": np.asarray(ane)}, {"y": np.asarray(ref)}, tolerance=tolerance)
    assert len(report.outputs) == 1
    return report.outputs[0]


# --- metrics ------------------------------------------------------------------------------------


def test_every_metric_matches_its_formula_worked_out_by_hand() -> None:
    ref = np.array([1.0, 2.0, 0.0, -4.0])
    ane = np.array([1.5, 2.0, 0.001, -4.0])
    r = one(ane, ref, LOOSE)
    # Errors 0.5, 0, 0.001, 0; the zero reference has no relative error.
    assert r.max_abs == pytest.approx(0.5)
    assert r.max_rel == pytest.approx(0.5)
    assert r.mean_abs == pytest.approx(0.501 / 4)
    dot = 1.5 * 1 + 2 * 2 + 0.001 * 0 + 16
    norms = math.sqrt(1.5**2 + 4 + 0.001**2 + 16) * math.sqrt(1 + 4 + 0 + 16)
    assert r.cosine == pytest.approx(dot / norms)
    # Bounds 0.11, 0.21, 0.01, 0.41: only the first element is outside.
    assert r.within == pytest.approx(0.75)
    assert (r.worst_index, r.worst_value, r.worst_reference) == ((0,), 1.5, 1.0)
    assert (r.nan_mismatches, r.inf_mismatches) == (0, 0)
    assert not r.passed
    assert r.shape == (4,)
    assert r.tolerance == LOOSE


def test_max_rel_is_taken_where_the_reference_is_not_zero() -> None:
    r = one([0.5, 0.03, 3.0], [0.0, 0.01, 2.0], LOOSE)
    assert r.max_rel == pytest.approx(2.0)  # 0.02 / 0.01; the 0.5 over a zero reference is skipped
    assert r.max_abs == pytest.approx(1.0)


def test_the_worst_index_is_in_the_reference_shape_and_ranks_by_tolerance() -> None:
    ref = np.arange(6, dtype=np.float64).reshape(2, 3) * 100
    ane = ref.copy()
    ane[0, 1] += 5.0  # bound 0.01 + 0.1 * 100 = 10.01: inside
    ane[1, 2] += 0.02  # bound 0.01 + 0.1 * 500: inside, smaller ratio
    ane[1, 0] += 40.5  # bound 30.01: outside, the only one
    r = one(ane, ref, LOOSE)
    assert r.worst_index == (1, 0)
    assert (r.worst_value, r.worst_reference) == (340.5, 300.0)
    assert r.max_abs == pytest.approx(40.5)
    assert r.within == pytest.approx(5 / 6)


def test_a_passing_output_points_at_the_element_closest_to_its_bound() -> None:
    r = one([1.05, 2.0, 3.2], [1.0, 2.0, 3.0], LOOSE)
    # Ratios 0.05/0.11 and 0.2/0.31: the third is closer to failing.
    assert r.passed and r.worst_index == (2,)


def test_cosine_of_zero_vectors_is_one_when_both_are_zero_and_zero_when_one_is() -> None:
    assert one(np.zeros(5), np.zeros(5)).cosine == 1.0
    assert one(np.zeros(5), np.zeros(5)).passed
    zero_ane = one(np.zeros(3), [1.0, 2.0, 3.0])
    assert zero_ane.cosine == 0.0 and not zero_ane.passed
    assert one([1e-4, 0.0, 0.0], np.zeros(3)).cosine == 0.0
    assert one([1e-4, 0.0, 0.0], np.zeros(3)).passed  # within atol all the same


def test_an_empty_tensor_passes_with_neutral_metrics() -> None:
    r = one(np.zeros((0, 3)), np.zeros((0, 3)))
    assert r.passed and r.worst_index is None
    assert (r.max_abs, r.max_rel, r.mean_abs, r.cosine, r.within) == (0.0, 0.0, 0.0, 1.0, 1.0)


def test_integer_and_bool_outputs_are_compared_as_numbers() -> None:
    assert one(np.array([3, 4], np.int64), np.array([3, 4], np.int32)).passed
    r = one(np.array([True, False]), np.array([True, True]))
    assert not r.passed and r.worst_index == (1,)


def test_strings_cannot_be_compared() -> None:
    r = one(np.array(["a"]), np.array([1.0]))
    assert not r.passed and r.problem == "ANE dtype <U1 cannot be compared"
    assert math.isnan(r.max_abs)


# --- the pass rule ------------------------------------------------------------------------------


def test_exactly_atol_plus_rtol_times_ref_passes_and_the_next_float_fails() -> None:
    tol = Tolerance(atol=0.25, rtol=0.5)  # bound at ref 1: exactly 0.75
    assert one(1.75, 1.0, tol).passed
    assert not one(np.nextafter(1.75, np.inf), 1.0, tol).passed
    assert one(-1.75, -1.0, tol).passed
    assert not one(np.nextafter(-1.75, -np.inf), -1.0, tol).passed
    # fp32 (and fp16) values differ exactly in float64, so the edge is exact below too.
    below = np.float32(0.25)
    assert one(below, np.float32(1.0), tol).passed
    assert not one(np.nextafter(below, np.float32(0)), np.float32(1.0), tol).passed


def test_the_default_bound_at_one_is_five_fp16_steps() -> None:
    step = 2.0**-10
    assert DEFAULT_TOLERANCE.atol + DEFAULT_TOLERANCE.rtol == 5 * step
    edge = np.float16(1 + 5 * step)
    assert float(edge) == 1 + 5 * step  # representable: the edge is exact in fp16
    assert one(edge, np.float32(1.0)).passed
    assert not one(np.nextafter(edge, np.float16(2)), np.float32(1.0)).passed


def test_the_defaults_let_flushed_subnormals_pass() -> None:
    subnormal = np.float16(6.0e-5)
    assert subnormal < np.finfo(np.float16).smallest_normal
    assert one(np.zeros(1, np.float16), [subnormal]).passed
    assert one(np.zeros(1, np.float16), [-np.finfo(np.float16).smallest_normal]).passed


def test_tolerances_must_be_finite_and_not_negative() -> None:
    with pytest.raises(InputError, match="atol: must be finite and >= 0, got -1"):
        Tolerance(atol=-1.0, rtol=0.0)
    with pytest.raises(InputError, match=r"rtol: .* got nan"):
        Tolerance(atol=0.0, rtol=math.nan)
    with pytest.raises(InputError, match=r"rtol: .* got inf"):
        Tolerance(atol=0.0, rtol=math.inf)


def test_a_zero_tolerance_demands_equality() -> None:
    exact = Tolerance(0.0, 0.0)
    assert one([0.0, 2.0], [0.0, 2.0], exact).passed
    r = one([0.0, 2.0], [1e-300, 2.0], exact)
    assert not r.passed and r.worst_index == (0,)


# --- NaN and infinity ---------------------------------------------------------------------------


def test_nan_equals_nan_only_where_both_are_nan() -> None:
    nan = math.nan
    assert one([nan, 1.0], [nan, 1.0]).passed
    r = one([nan, 1.0, 2.0], [1.0, 1.0, nan])
    assert not r.passed
    assert r.nan_mismatches == 2 and r.inf_mismatches == 0
    assert r.worst_index == (0,) and math.isnan(r.worst_value or 0.0)
    assert r.within == pytest.approx(1 / 3)
    # Metrics cover the finite pairs only.
    assert (r.max_abs, r.mean_abs) == (0.0, 0.0)


def test_infinities_equal_only_themselves() -> None:
    inf = math.inf
    assert one([inf, -inf], [inf, -inf]).passed
    r = one([inf, -inf, 1.0, 65504.0], [-inf, -inf, inf, 65504.0])
    assert r.inf_mismatches == 2 and r.nan_mismatches == 0
    assert r.within == pytest.approx(0.5)
    assert r.worst_index == (0,)
    # A finite reference is not matched by an overflow to infinity either.
    overflow = one(np.array([np.inf], np.float16), np.array([65520.0], np.float32))
    assert overflow.inf_mismatches == 1 and not overflow.passed


def test_nan_against_infinity_is_a_nan_mismatch_only() -> None:
    r = one([math.nan], [math.inf])
    assert (r.nan_mismatches, r.inf_mismatches, r.passed) == (1, 0, False)


# --- shapes, missing and extra outputs, overrides -----------------------------------------------


def test_shapes_equal_up_to_leading_ones_are_compared() -> None:
    ref = np.linspace(-1, 1, 77).reshape(1, 77)
    r = one(ref.reshape(1, 1, 1, 77), ref)
    assert r.passed and r.shape == (1, 77)
    assert one(ref.reshape(77), ref.reshape(1, 1, 77)).passed


def test_other_shapes_fail_naming_both() -> None:
    r = one(np.zeros((77, 1)), np.zeros((1, 77)))
    assert not r.passed
    assert r.problem == "shape (77, 1) (ANE) vs (1, 77) (reference)"
    assert r.line() == "FAIL y: shape (77, 1) (ANE) vs (1, 77) (reference)"


def test_missing_and_extra_outputs_fail_naming_themselves() -> None:
    report = compare({"b": np.ones(2), "c": np.ones(1)}, {"a": np.ones(3), "b": np.ones(2)})
    assert [(r.name, r.passed, r.problem) for r in report.outputs] == [
        ("a", False, "missing from the ANE outputs"),
        ("b", True, None),
        ("c", False, "not an output of the reference"),
    ]
    assert report.outputs[0].shape == (3,) and report.outputs[2].shape == (1,)
    assert not report.passed


def test_per_output_tolerances_override_the_default() -> None:
    ane = {"a": np.array([1.05]), "b": np.array([1.05])}
    ref = {"a": np.array([1.0]), "b": np.array([1.0])}
    report = compare(ane, ref, per_output={"b": LOOSE})
    assert [(r.name, r.passed, r.tolerance) for r in report.outputs] == [
        ("a", False, DEFAULT_TOLERANCE),
        ("b", True, LOOSE),
    ]
    assert compare(ane, ref, tolerance=LOOSE).passed


def test_an_override_for_an_output_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(InputError, match=r"'typo'.*outputs are 'a'"):
        compare({"a": np.ones(1)}, {"a": np.ones(1)}, per_output={"typo": LOOSE})


def test_a_report_without_outputs_does_not_pass() -> None:
    report = compare({}, {})
    assert not report.passed and report.worst is None


# --- the report ---------------------------------------------------------------------------------


def test_worst_is_the_failing_output_with_the_largest_error_else_the_worst_passing() -> None:
    ref = {"a": np.ones(4), "b": np.ones(4), "c": np.ones(4)}
    failing = compare({"a": ref["a"] + 0.5, "b": ref["b"] + 0.2, "c": ref["c"] + 0.001}, ref)
    assert [r.passed for r in failing.outputs] == [False, False, True]
    assert failing.worst is not None and failing.worst.name == "a"
    passing = compare({"a": ref["a"], "b": ref["b"] + 0.002, "c": ref["c"] + 0.001}, ref)
    assert passing.passed and passing.worst is not None and passing.worst.name == "b"
    missing = compare({"a": ref["a"] + 9, "b": ref["b"]}, ref)
    assert missing.worst is not None and missing.worst.name == "c"


def test_line_names_the_verdict_errors_and_the_worst_element() -> None:
    r = one([1.0, 2.5], [1.0, 2.0], LOOSE)
    assert f"{6 / math.sqrt(7.25 * 5):.6f}" == "0.996546"  # the cosine
    assert r.line() == (
        "FAIL y: max abs 5.000e-01 rel 2.500e-01, cos 0.996546, within 50.00%, "
        "worst [1] ane 2.5 ref 2 (atol 1.000e-02 rtol 1.000e-01)"
    )
    nan = one([math.nan, 1.0], [1.0, 1.0], LOOSE)
    assert "1 NaN / 0 inf mismatches" in nan.line() and "worst [0] ane nan ref 1" in nan.line()


def test_within_is_rounded_down_so_a_failure_never_shows_100_percent() -> None:
    ref = np.ones(100_001)
    ane = ref.copy()
    ane[-1] = 2.0
    assert "within 99.99%" in one(ane, ref).line()


def test_table_columns_line_up() -> None:
    report = compare(
        {"short": np.ones((1, 2)), "a_long_output_name": np.array([1.0, 1.5, 1.0])},
        {
            "short": np.ones((1, 2)),
            "a_long_output_name": np.ones(3),
            "gone": np.ones(2),
        },
    )
    lines = report.table().splitlines()
    assert len(lines) == 4
    header = lines[0]
    for column in ("output", "shape", "max abs", "cosine", "within", "worst"):
        start = header.index(column)
        for row in lines[1:3]:
            assert row[start - 2 : start] == "  " and row[start] != " ", (column, row)
    assert lines[1].startswith("PASS  short ")
    assert lines[2].startswith("FAIL  a_long_output_name  3 ")
    assert lines[2].endswith("[1] ane 1.5 ref 1")
    assert lines[3].startswith("FAIL  gone ") and lines[3].endswith("missing from the ANE outputs")


def test_to_json_is_strict_json_with_non_finite_numbers_as_strings() -> None:
    report = compare(
        {"a": np.array([math.nan, 1.0]), "b": np.array([math.inf])},
        {"a": np.array([1.0, 1.0]), "b": np.array([-math.inf]), "c": np.ones(1)},
    )
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["passed"] is False
    assert [o["name"] for o in data["outputs"]] == ["a", "b", "c"]
    a, b, c = data["outputs"]
    assert a["worst_value"] == "nan" and a["worst_reference"] == 1.0
    assert a["nan_mismatches"] == 1 and a["worst_index"] == [0] and a["shape"] == [2]
    assert (b["worst_value"], b["worst_reference"]) == ("inf", "-inf")
    assert c["problem"] == "missing from the ANE outputs" and c["max_abs"] == "nan"
    assert c["worst_index"] is None and c["worst_value"] is None
    assert a["tolerance"] == {"atol": 2.0**-10, "rtol": 2.0**-8}
    assert data["worst"] in {"a", "b", "c"}
    assert set(a) == {
        "name",
        "passed",
        "problem",
        "shape",
        "max_abs",
        "max_rel",
        "mean_abs",
        "cosine",
        "within",
        "nan_mismatches",
        "inf_mismatches",
        "worst_index",
        "worst_value",
        "worst_reference",
        "tolerance",
    }


def test_check_report_is_a_plain_value() -> None:
    report = compare({"a": np.ones(1)}, {"a": np.ones(1)})
    assert isinstance(report, CheckReport) and report == CheckReport(report.outputs)


# --- the faults the simulator injects, on a real graph's reference -------------------------------


@pytest.fixture(scope="module")
def real_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """What a correct engine returns for `three_outputs`: the reference, rounded to fp16."""
    source = save_model(tmp_path_factory.mktemp("faults") / "m.onnx", three_outputs_model())
    specs, _ = graph_io(source)
    ref = reference_outputs(source, random_inputs(specs, seed=7))
    assert ref.runtime == "onnxruntime"
    return ref.outputs


def engine(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.astype(np.float16) for name, value in ref.items()}


def outside(report: OutputReport, ane: np.ndarray, ref: np.ndarray) -> bool:
    """Whether the worst element really is outside its tolerance (worked out here)."""
    assert report.worst_index is not None
    a = np.float64(ane.reshape(ref.shape)[report.worst_index])
    r = np.float64(ref[report.worst_index])
    tol = report.tolerance
    if np.isnan(a) or np.isnan(r):
        return bool(np.isnan(a) != np.isnan(r))
    return bool(abs(a - r) > tol.atol + tol.rtol * abs(r)) or (np.isinf(a) and a != r)


def bitflip(value: np.ndarray) -> tuple[np.ndarray, int]:
    out = value.copy()
    middle = out.size // 2
    out.reshape(-1).view(np.uint16)[middle] ^= np.uint16(1 << 14)  # top exponent bit
    return out, middle


def wrong_stride(value: np.ndarray) -> np.ndarray:
    n, c, h, w = value.shape
    row_stride, plane_stride, _ = layout_for(value.shape)
    image = tile(value)
    assert image is not None
    # Read back with half the row stride: each row after the first starts in the wrong place.
    return untile(image, n, c, h, w, row_stride // 2, plane_stride)


@pytest.mark.parametrize("target", ["sig", "lin"])
@pytest.mark.parametrize("fault", ["bitflip", "zero", "stride", "nan", "scale"])
def test_every_injected_fault_fails_naming_the_output_and_the_worst_index(
    real_outputs: dict[str, np.ndarray], fault: str, target: str
) -> None:
    ane = engine(real_outputs)
    assert compare(ane, real_outputs).passed
    value = ane[target]
    expected_index = None
    if fault == "bitflip":
        value, flat = bitflip(value)
        expected_index = tuple(int(i) for i in np.unravel_index(flat, value.shape))
    elif fault == "zero":
        value = np.zeros_like(value)
    elif fault == "stride":
        value = wrong_stride(value)
    elif fault == "nan":
        value = value.copy()
        value[0, 1, 2, 3] = np.nan
        expected_index = (0, 1, 2, 3)
    else:
        value = (value.astype(np.float32) * np.float32(1.01)).astype(np.float16)
    ane[target] = value
    report = compare(ane, real_outputs)
    failed = [r for r in report.outputs if not r.passed]
    assert [r.name for r in failed] == [target]
    bad = failed[0]
    assert report.worst == bad and not report.passed
    assert outside(bad, value, real_outputs[target])
    if expected_index is not None:
        assert bad.worst_index == expected_index
    line = bad.line()
    assert line.startswith(f"FAIL {target}: ")
    assert f"worst [{','.join(map(str, bad.worst_index or ()))}]" in line


def test_two_swapped_outputs_both_fail(real_outputs: dict[str, np.ndarray]) -> None:
    ane = engine(real_outputs)
    ane["sig"], ane["lin"] = ane["lin"], ane["sig"]
    report = compare(ane, real_outputs)
    assert [(r.name, r.passed) for r in report.outputs] == [
        ("sig", False),
        ("lin", False),
        ("tiny", True),
    ]
    for r in report.outputs[:2]:
        assert outside(r, ane[r.name], real_outputs[r.name])


def one_ulp_noise(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every finite non-zero element moved one fp16 step up or down (worked on the bits)."""
    out = value.astype(np.float16)
    bits = out.reshape(-1).view(np.uint16)
    magnitude = (bits & 0x7FFF).astype(np.int32)
    moved = magnitude + rng.choice([-1, 1], size=bits.size)
    movable = (magnitude > 0) & (magnitude < 0x7C00) & (moved > 0) & (moved < 0x7C00)
    bits[movable] = (bits[movable] & 0x8000) | moved[movable].astype(np.uint16)
    return out


def test_one_ulp_of_fp16_noise_on_every_element_passes_with_the_defaults(
    real_outputs: dict[str, np.ndarray],
) -> None:
    rng = np.random.default_rng(11)
    tiny = real_outputs["tiny"]
    # The tiny output reaches into fp16's subnormals, where one step is 2**-24 absolute.
    assert (np.abs(tiny) < np.finfo(np.float16).smallest_normal).any()
    assert np.abs(real_outputs["lin"]).max() > 512  # steps of 0.5 and more
    for trial in range(5):
        noisy = {name: one_ulp_noise(value, rng) for name, value in real_outputs.items()}
        for name, value in noisy.items():
            assert (value != real_outputs[name].astype(np.float16)).mean() > 0.99, (trial, name)
        report = compare(noisy, real_outputs)
        assert report.passed, report.table()


def test_below_atol_a_one_percent_scale_error_is_not_seen(
    real_outputs: dict[str, np.ndarray],
) -> None:
    # The documented blind spot: values far under atol carry no relative check.
    ane = engine(real_outputs)
    ane["tiny"] = (ane["tiny"].astype(np.float32) * np.float32(1.01)).astype(np.float16)
    assert compare(ane, real_outputs).passed
