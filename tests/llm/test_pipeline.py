"""What a build expands an [llm] table into: the split's targets and one task per program."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ane_build.convert import default_output
from ane_build.llm.errors import PlanError
from ane_build.llm.pipeline import LlmConfig, plan_llm
from ane_build.llm.plan import SplitSettings, plan_split
from ane_build.llm.spec import LlamaSpec

from .test_spec import TINYLLAMA

ROOT = Path("/project")


def test_tasks_for_tinyllama() -> None:
    spec = LlamaSpec.from_config(TINYLLAMA)
    config = LlmConfig(checkpoint=Path("models/tinyllama"), context=2048, prefill=1)
    plan = plan_llm(config, spec, model="tinyllama", root=ROOT)
    assert plan.output == ROOT / "build" / "llm" / "tinyllama"
    names = [p.name for p in plan.programs]
    assert names == ["embed", *(f"block_{i}.decode" for i in range(5)), "head_0.decode"]
    assert plan.split_targets[-1] == plan.output / "manifest.json"
    assert set(plan.split_targets[:-1]) == {p.graph for p in plan.programs}
    for task in plan.programs:
        assert task.graph.parent == plan.output
        if task.kind == "embed":
            assert task.container is None and task.io == {}
            continue
        assert task.container == default_output(task.graph)
        assert sorted(s.name for s in task.io.values()) == sorted(
            t.name for t in (*task.inputs, *task.outputs)
        )
    # The same programs the split itself would write.
    direct = plan_split(spec, SplitSettings(context=2048, prefill=1))
    assert [c.graph for c in direct.chunks] == [p.graph.name for p in plan.programs]


def test_prefill_programs_and_an_explicit_output() -> None:
    spec = LlamaSpec.from_config({**TINYLLAMA, "num_hidden_layers": 4, "vocab_size": 512})
    config = LlmConfig(checkpoint=Path("m"), chunks=2, context=128, prefill=16, output=Path("out"))
    plan = plan_llm(config, spec, model="x", root=ROOT)
    assert plan.output == ROOT / "out"
    variants = [(p.chunk, p.variant) for p in plan.programs if p.kind == "block"]
    assert variants == [
        ("block_0", "decode"),
        ("block_0", "prefill"),
        ("block_1", "decode"),
        ("block_1", "prefill"),
    ]


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="checkpoint"):
        LlmConfig.model_validate({"chunks": 2})
    with pytest.raises(ValidationError, match="contxt"):
        LlmConfig.model_validate({"checkpoint": "m", "contxt": 4})
    spec = LlamaSpec.from_config(TINYLLAMA)
    with pytest.raises(PlanError, match="address space"):
        plan_llm(LlmConfig(checkpoint=Path("m"), context=2048), spec, model="t", root=ROOT)
