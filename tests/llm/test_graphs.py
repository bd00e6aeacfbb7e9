"""The chunk graphs: valid ONNX, the plan's tensors, masks that really hide what they mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ane_build.llm.graphs import MASKED, causal_block
from ane_build.llm.manifest import read_manifest
from ane_build.llm.plan import ChunkPlan


def session(split_dir: Path, plan: ChunkPlan) -> ort.InferenceSession:
    return ort.InferenceSession(str(split_dir / plan.graph), providers=["CPUExecutionProvider"])


def feeds(plan: ChunkPlan, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {t.name: rng.standard_normal(t.shape).astype(np.float16) for t in plan.inputs}
    out["mask"] = np.zeros(out["mask"].shape, np.float16)
    return out


def test_graphs_are_valid_and_carry_the_plans_tensors(split_dir: Path) -> None:
    manifest = read_manifest(split_dir)
    for plan in manifest.chunks:
        model = onnx.load(str(split_dir / plan.graph))
        onnx.checker.check_model(model, full_check=True)
        inputs = [
            (i.name, [d.dim_value or -1 for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input
        ]
        outputs = [o.name for o in model.graph.output]
        assert inputs == [(t.name, list(t.shape)) for t in plan.inputs], plan.name
        assert outputs == [t.name for t in plan.outputs], plan.name
        expected = 7 if plan.kind == "embed" else 10  # int64 ids, float16 everything else
        assert all(i.type.tensor_type.elem_type in (expected, 10) for i in model.graph.input)
        weights = [i for i in model.graph.initializer if i.name.startswith(("model.", "lm_head"))]
        assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
        size = (split_dir / plan.graph).stat().st_size
        assert size <= plan.graph_bytes, (plan.name, size, plan.graph_bytes)


def test_masked_cache_rows_do_not_matter(split_dir: Path) -> None:
    plan = read_manifest(split_dir).program("block_0.prefill")
    run = session(split_dir, plan)
    rng = np.random.default_rng(1)
    inputs = feeds(plan, rng)
    valid = 20
    inputs["mask"][..., valid:] = MASKED
    first = run.run(None, inputs)
    # Garbage (large but finite, as stale fp16 rows can be) in every masked row.
    for name in ("key_cache.0", "value_cache.0"):
        inputs[name][:, :, valid:] = rng.uniform(-6e4, 6e4, inputs[name][:, :, valid:].shape)
    second = run.run(None, inputs)
    for a, b in zip(first, second, strict=True):
        assert np.all(np.isfinite(a)) and np.array_equal(a, b)
    # And the valid rows do matter.
    inputs["key_cache.0"][:, :, 0] += 1
    assert not np.array_equal(run.run(None, inputs)[0], first[0])


def test_later_positions_of_a_block_do_not_change_earlier_ones(split_dir: Path) -> None:
    plan = read_manifest(split_dir).program("block_1.prefill")
    run = session(split_dir, plan)
    inputs = feeds(plan, np.random.default_rng(2))
    first = run.run(None, inputs)
    inputs["hidden"][:, 5:] = 123.0  # the padding of a block that ends after 5 positions
    second = run.run(None, inputs)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a[..., :5, :], b[..., :5, :])
        assert not np.array_equal(a[..., 5:, :], b[..., 5:, :])


def test_causal_block() -> None:
    block = causal_block(3)
    assert block.dtype == np.float32
    assert block.tolist() == [[0, MASKED, MASKED], [0, 0, MASKED], [0, 0, 0]]
    assert float(np.finfo(np.float16).min) == MASKED


@pytest.mark.parametrize("name", ["block_0.decode", "head_0.decode"])
def test_outputs_are_float16(split_dir: Path, name: str) -> None:
    plan = read_manifest(split_dir).program(name)
    rng = np.random.default_rng(3)
    inputs = {t.name: rng.standard_normal(t.shape).astype(np.float16) for t in plan.inputs}
    for value, tensor in zip(session(split_dir, plan).run(None, inputs), plan.outputs, strict=True):
        assert value.dtype == np.float16 and value.shape == tensor.shape
