"""reference: onnxruntime on small graphs, fp16-rounded feeds, the fallback, the cache."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ane_build.check.reference import (
    Reference,
    Session,
    onnxruntime_session,
    reference_outputs,
    user_cache_dir,
)
from ane_build.errors import AneFormatError, InputError, ReferenceRunError
from tests.helpers import onnx_model, save_model, unary_model

X = np.array([[-2.0, -0.5, 0.0, 0.75]], np.float32)


class CountingFactory:
    """The session seam: makes real onnxruntime sessions and counts them."""

    def __init__(self) -> None:
        self.sessions: list[Path] = []

    def __call__(self, source: Path) -> Session:
        self.sessions.append(source)
        return onnxruntime_session(source)


def run(tmp_path: Path, proto: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> Reference:
    return reference_outputs(save_model(tmp_path / "m.onnx", proto), inputs)


# --- known results ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("Relu", np.maximum(X, 0)),
        ("Sigmoid", 1 / (1 + np.exp(-X.astype(np.float64)))),
    ],
)
def test_unary_operators(tmp_path: Path, op: str, expected: np.ndarray) -> None:
    ref = run(tmp_path, unary_model(op), {"x": X})
    assert ref.runtime == "onnxruntime" and not ref.cached and ref.fallback_reason is None
    assert list(ref.outputs) == ["y"] and ref.outputs["y"].dtype == np.float32
    np.testing.assert_allclose(ref.outputs["y"], expected, rtol=1e-5)


def test_mul_add_and_concat(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["prod"]),
        helper.make_node("Add", ["prod", "a"], ["total"]),
        helper.make_node("Concat", ["total", "b"], ["joined"], axis=0),
    ]
    proto = onnx_model(nodes, {"a": [2, 3], "b": [2, 3]}, {"total": [2, 3], "joined": [4, 3]})
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, np.float32)
    out = run(tmp_path, proto, {"a": a, "b": b}).outputs
    assert list(out) == ["total", "joined"]
    np.testing.assert_array_equal(out["total"], a * 1.5)
    np.testing.assert_array_equal(out["joined"], np.vstack([a * 1.5, b]))


def test_a_convolution(tmp_path: Path) -> None:
    weight = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 8
    bias = np.array([1.0, -1.0], np.float32)
    proto = onnx_model(
        [helper.make_node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1])],
        {"x": [1, 1, 4, 4]},
        {"y": [1, 2, 4, 4]},
        initializers={"w": weight, "bias": bias},
    )
    x = (np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) - 8) / 4
    padded = np.pad(x[0, 0].astype(np.float64), 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))  # (4, 4, 3, 3)
    expected = np.stack([(windows * weight[k, 0]).sum(axis=(2, 3)) + bias[k] for k in range(2)])
    out = run(tmp_path, proto, {"x": x}).outputs["y"]
    np.testing.assert_allclose(out, expected[None], rtol=1e-6)


def test_inputs_are_rounded_to_fp16_before_the_run(tmp_path: Path) -> None:
    # (x - 1) * 4096: 1 + 2**-12 is not an fp16 value; the engine reads 1.0, so the answer is 0.
    proto = onnx_model(
        [
            helper.make_node("Sub", ["x", "one"], ["d"]),
            helper.make_node("Mul", ["d", "k"], ["y"]),
        ],
        {"x": [3]},
        {"y": [3]},
        initializers={"one": np.ones(1, np.float32), "k": np.full(1, 4096, np.float32)},
    )
    x = np.array([1 + 2**-12, 1 + 2**-10, 1 + 3 * 2**-11], np.float32)
    assert np.float32(x[0] - 1) * 4096 == 1.0  # unrounded, the first answer would be 1
    out = run(tmp_path, proto, {"x": x}).outputs["y"]
    assert out.tolist() == [0.0, 4.0, 8.0]  # the tie 1 + 3 * 2**-11 rounds to even: 1 + 2**-9


def test_fp16_graphs_are_fed_fp16(tmp_path: Path) -> None:
    proto = onnx_model(
        [helper.make_node("Relu", ["x"], ["y"])], {"x": [3]}, {"y": [3]}, elem=TensorProto.FLOAT16
    )
    x = np.array([0.1, -1.0, np.nan], np.float32)
    out = run(tmp_path, proto, {"x": x}).outputs["y"]
    assert out.dtype == np.float16 and out[0] == np.float16(0.1) and out[1] == 0
    assert np.isnan(out[2])


def test_inputs_must_match_the_graph(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Relu"))
    with pytest.raises(InputError, match=r"missing \['x'\], not inputs of the graph none"):
        reference_outputs(source, {})
    with pytest.raises(InputError, match=r"missing none, not inputs of the graph \['z'\]"):
        reference_outputs(source, {"x": X, "z": X})
    with pytest.raises(InputError, match=r"input 'x': expected shape \(1, 4\), got \(4, 1\)"):
        reference_outputs(source, {"x": X.reshape(4, 1)})


# --- the fallback -------------------------------------------------------------------------------


def int16_relu() -> onnx.ModelProto:
    """Valid ONNX that onnxruntime's CPU provider has no kernel for: Relu on int16."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT16),
        helper.make_node("Relu", ["xi"], ["ri"]),
        helper.make_node("Cast", ["ri"], ["y"], to=TensorProto.FLOAT),
    ]
    return onnx_model(nodes, {"x": [2, 3]}, {"y": [2, 3]})


def test_the_premise_onnxruntime_refuses_int16_relu(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", int16_relu())
    onnx.checker.check_model(str(source), full_check=True)
    with pytest.raises(Exception, match=r"NOT_IMPLEMENTED.*Relu"):
        ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])


def test_onnx_reference_stands_in_when_onnxruntime_cannot_run_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = np.array([[-2.5, 3.75, 1.0], [0.0, -1.0, 9.875]], np.float32)
    with caplog.at_level(logging.WARNING, logger="ane_build.check.reference"):
        ref = run(tmp_path, int16_relu(), {"x": x})
    assert ref.runtime == "onnx.reference"
    assert ref.fallback_reason is not None and "Relu" in ref.fallback_reason
    assert "NOT_IMPLEMENTED" in ref.fallback_reason
    assert "onnxruntime cannot run it, using onnx.reference" in caplog.text
    np.testing.assert_array_equal(ref.outputs["y"], np.maximum(np.trunc(x), 0))


def test_an_invalid_model_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    # Sigmoid is not defined on int8: onnxruntime refuses it, and the evaluator must not guess.
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT8),
        helper.make_node("Sigmoid", ["xi"], ["si"]),
        helper.make_node("Cast", ["si"], ["y"], to=TensorProto.FLOAT),
    ]
    source = save_model(tmp_path / "m.onnx", onnx_model(nodes, {"x": [2]}, {"y": [2]}))
    with pytest.raises(
        ReferenceRunError, match=r"onnxruntime cannot run it .*and neither can onnx\.reference"
    ) as info:
        reference_outputs(source, {"x": np.ones(2, np.float32)})
    assert str(source) in str(info.value) and info.value.__cause__ is not None


# --- the cache ----------------------------------------------------------------------------------


def test_a_second_run_comes_from_the_cache_without_a_session(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Sigmoid"))
    cache, factory = tmp_path / "cache", CountingFactory()
    first = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    second = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert (first.cached, second.cached) == (False, True)
    assert factory.sessions == [source]
    assert second.runtime == "onnxruntime" and list(second.outputs) == ["y"]
    np.testing.assert_array_equal(second.outputs["y"], first.outputs["y"])
    assert second.outputs["y"].dtype == np.float32
    assert [p.suffix for p in cache.iterdir()] == [".npz"]


def test_changed_inputs_miss_the_cache(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Sigmoid"))
    cache, factory = tmp_path / "cache", CountingFactory()
    reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    changed = reference_outputs(source, {"x": X + 1}, cache_dir=cache, session_factory=factory)
    assert not changed.cached and len(factory.sessions) == 2
    reshaped = reference_outputs(
        source, {"x": X.reshape(1, 1, 4)}, cache_dir=cache, session_factory=factory
    )
    assert not reshaped.cached and len(factory.sessions) == 3


def test_a_changed_source_misses_the_cache(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Sigmoid"))
    cache, factory = tmp_path / "cache", CountingFactory()
    reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    save_model(source, unary_model("Relu"))
    after = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert not after.cached and len(factory.sessions) == 2
    np.testing.assert_array_equal(after.outputs["y"], np.maximum(X, 0))


def test_changed_external_weights_miss_the_cache(tmp_path: Path) -> None:
    proto = onnx_model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        {"x": [1, 4]},
        {"y": [1, 4]},
        initializers={"w": np.full((1, 4), 2.0, np.float32)},
    )
    source = tmp_path / "m.onnx"
    onnx.save(proto, str(source), save_as_external_data=True, location="w.bin", size_threshold=0)
    cache, factory = tmp_path / "cache", CountingFactory()
    first = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    np.testing.assert_array_equal(first.outputs["y"], X * 2)
    (tmp_path / "w.bin").write_bytes(np.full((1, 4), 3.0, np.float32).tobytes())
    after = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert not after.cached and len(factory.sessions) == 2
    np.testing.assert_array_equal(after.outputs["y"], X * 3)


@pytest.mark.parametrize(
    "damage", [b"", b"PK\x03\x04 truncated", b"not a zip at all"], ids=["empty", "zip", "text"]
)
def test_a_corrupt_cache_entry_is_ignored_and_rewritten(tmp_path: Path, damage: bytes) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Sigmoid"))
    cache, factory = tmp_path / "cache", CountingFactory()
    first = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    (entry,) = cache.iterdir()
    entry.write_bytes(damage)
    again = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert not again.cached and len(factory.sessions) == 2
    np.testing.assert_array_equal(again.outputs["y"], first.outputs["y"])
    third = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert third.cached and len(factory.sessions) == 2


def test_a_cache_entry_that_does_not_describe_itself_is_ignored(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Sigmoid"))
    cache, factory = tmp_path / "cache", CountingFactory()
    reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    (entry,) = cache.iterdir()
    np.savez(entry, y=np.zeros((1, 4), np.float32))  # arrays, but no description
    again = reference_outputs(source, {"x": X}, cache_dir=cache, session_factory=factory)
    assert not again.cached and again.outputs["y"].min() > 0


def test_the_fallback_is_remembered_by_the_cache(tmp_path: Path) -> None:
    source = save_model(tmp_path / "m.onnx", int16_relu())
    x = {"x": np.ones((2, 3), np.float32)}
    first = reference_outputs(source, x, cache_dir=tmp_path / "c")
    second = reference_outputs(source, x, cache_dir=tmp_path / "c")
    assert second.cached and second.runtime == "onnx.reference"
    assert second.fallback_reason == first.fallback_reason is not None


def test_a_cache_that_cannot_be_written_costs_only_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save_model(tmp_path / "m.onnx", unary_model("Relu"))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="ane_build.check.reference"):
        ref = reference_outputs(source, {"x": X}, cache_dir=blocker)
    np.testing.assert_array_equal(ref.outputs["y"], np.maximum(X, 0))
    assert "cannot cache the reference outputs" in caplog.text and str(blocker) in caplog.text


def test_a_session_factory_sees_the_rounded_feeds(tmp_path: Path) -> None:
    seen: list[dict[str, np.ndarray]] = []

    class Recorder:
        def run(
            self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
        ) -> list[Any]:
            seen.append(dict(input_feed))
            return [np.zeros((1, 4), np.float32)]

    source = save_model(tmp_path / "m.onnx", unary_model("Relu"))
    x = np.array([[1 + 2**-12, np.nan, 0.1, -0.0]], np.float32)
    reference_outputs(source, {"x": x}, session_factory=lambda _path: Recorder())
    fed = seen[0]["x"]
    assert fed.dtype == np.float32
    assert fed.astype(np.float16).view(np.uint16).reshape(-1).tolist() == [
        0x3C00,
        0x7E00,
        0x2E66,
        0x8000,
    ]


@pytest.mark.parametrize("cache", [False, True])
def test_a_file_that_is_not_onnx_is_a_format_error_with_or_without_cache(
    tmp_path: Path, cache: bool
) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0a\xff\xff\xff\xff")
    with pytest.raises(AneFormatError, match=f"{junk}: not (a valid ONNX|an ONNX model)"):
        reference_outputs(junk, {"x": X}, cache_dir=tmp_path / "c" if cache else None)


def test_the_user_cache_follows_xdg_and_ignores_a_relative_setting(tmp_path: Path) -> None:
    home = Path.home()
    assert user_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ane_build" / "reference"
    assert user_cache_dir({"XDG_CACHE_HOME": "rel"}) == home / ".cache" / "ane_build" / "reference"
    assert user_cache_dir({}) == home / ".cache" / "ane_build" / "reference"
