"""Planning a split from shapes alone: --chunks auto, the per-program and address-space limits."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ane_build.convert import default_output
from ane_build.driver.uapi import ANE_ADDRESS_SPACE, ANE_TILE_COUNT
from ane_build.llm.errors import PlanError
from ane_build.llm.plan import (
    CONTAINER_LIMIT,
    FIRST_IO_SLOT,
    SplitSettings,
    group_layers,
    plan_split,
    problems,
)
from ane_build.llm.spec import LlamaSpec

from .test_spec import TINYLLAMA

TINY = LlamaSpec(
    hidden_size=64,
    intermediate_size=176,
    num_layers=6,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    vocab_size=1024,
    max_positions=512,
)


@given(layers=st.integers(1, 200), data=st.data())
def test_group_layers_covers_every_layer_evenly(layers: int, data: st.DataObject) -> None:
    groups = data.draw(st.integers(1, layers))
    ranges = group_layers(layers, groups)
    assert len(ranges) == groups
    assert ranges[0][0] == 0 and ranges[-1][1] == layers
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [end - start for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_tinyllama_auto_picks_the_fewest_chunks_under_every_limit() -> None:
    spec = LlamaSpec.from_config(TINYLLAMA)
    settings = SplitSettings(context=2048, prefill=1)
    plan = plan_split(spec, settings)
    ane = [c for c in plan.chunks if c.on_ane]
    # 22 layers of ~88 MB of fp16 weights, a container holding them twice (graph + base64):
    # five layers per program at most, so five chunks.
    assert plan.blocks == 5
    assert [c.layers for c in ane if c.kind == "block"] == [
        (0, 5),
        (5, 10),
        (10, 14),
        (14, 18),
        (18, 22),
    ]
    assert all(c.container_bytes <= CONTAINER_LIMIT for c in ane)
    assert all(len(c.inputs) + len(c.outputs) <= ANE_TILE_COUNT - FIRST_IO_SLOT for c in ane)
    assert plan.resident_bytes <= ANE_ADDRESS_SPACE
    assert sum(c.params for c in plan.chunks) == 1_100_048_384
    # One fewer chunk does not fit: the choice is the smallest.
    fewer = SplitSettings(context=2048, prefill=1, chunks=4)
    with pytest.raises(PlanError, match=r"block_0\.decode: container"):
        plan_split(spec, fewer)
    report = "\n".join(plan.report())
    for chunk in plan.chunks:
        assert chunk.name in report
    assert "5 block chunk(s)" in report and "MiB" in report


def test_tinyllama_with_prefill_programs_does_not_fit_and_says_what_would() -> None:
    spec = LlamaSpec.from_config(TINYLLAMA)
    with pytest.raises(PlanError) as info:
        plan_split(spec, SplitSettings(context=2048, prefill=64))
    message = str(info.value)
    assert f"{ANE_ADDRESS_SPACE:,}" in message
    assert "--prefill 1" in message and "which fits" in message


def test_a_model_that_cannot_fit_at_all() -> None:
    big = LlamaSpec.from_config({**TINYLLAMA, "num_hidden_layers": 80})
    with pytest.raises(PlanError) as info:
        plan_split(big, SplitSettings(context=2048, prefill=1))
    assert "ANE address space" in str(info.value) and "which fits" not in str(info.value)
    wide = LlamaSpec.from_config(
        {**TINYLLAMA, "hidden_size": 16384, "intermediate_size": 65536, "num_attention_heads": 128}
    )
    with pytest.raises(PlanError, match="even with one layer per chunk"):
        plan_split(wide, SplitSettings(context=2048, prefill=1))


def test_slot_count_limits_layers_per_chunk() -> None:
    # Tiny weights, so only the 28 tensor slots bind: 5 + 4 per layer tensors per block.
    spec = LlamaSpec(**{**TINY.__dict__, "num_layers": 12})
    plan = plan_split(spec, SplitSettings(context=64, prefill=8))
    assert plan.blocks == 3
    with pytest.raises(PlanError, match="tile slots"):
        plan_split(spec, SplitSettings(context=64, prefill=8, chunks=2))


def test_head_is_split_over_the_vocabulary_when_too_big() -> None:
    settings = SplitSettings(context=64, prefill=8, container_limit=3 << 20)
    spec = LlamaSpec(**{**TINY.__dict__, "vocab_size": 20000})
    heads = [c for c in plan_split(spec, settings).chunks if c.kind == "head"]
    assert len(heads) > 1
    assert heads[0].vocab and heads[0].vocab[0] == 0
    assert heads[-1].vocab and heads[-1].vocab[1] == 20000
    for a, b in itertools.pairwise(heads):
        assert a.vocab and b.vocab and a.vocab[1] == b.vocab[0]
    assert all(h.container_bytes <= 3 << 20 for h in heads)
    assert not problems(heads, settings)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (SplitSettings(context=1024), ["--context 1024", "512"]),
        (SplitSettings(context=64, prefill=65), ["--prefill 65", "64"]),
        (SplitSettings(context=64, chunks=7), ["--chunks 7", "6 layers"]),
    ],
)
def test_settings_that_contradict_the_model(settings: SplitSettings, words: list[str]) -> None:
    with pytest.raises(PlanError) as info:
        plan_split(TINY, settings)
    for word in words:
        assert word in str(info.value)


def test_settings_of_reports_bad_values_as_plan_errors() -> None:
    with pytest.raises(PlanError, match="context"):
        SplitSettings.of(context=0)
    with pytest.raises(PlanError, match="chunks"):
        SplitSettings.of(chunks="many")
    assert SplitSettings.of(chunks=3).chunks == 3


def test_programs_tensors_and_slots() -> None:
    plan = plan_split(TINY, SplitSettings(context=64, prefill=8, chunks=2))
    names = [c.name for c in plan.chunks]
    assert names == [
        "embed",
        "block_0.decode",
        "block_0.prefill",
        "block_1.decode",
        "block_1.prefill",
        "head_0.decode",
    ]
    block = plan.chunks[2]
    assert block.positions == 8 and block.layers == (0, 3)
    shapes = {t.name: t.shape for t in block.inputs}
    assert shapes["hidden"] == (1, 8, 64) and shapes["mask"] == (1, 1, 8, 64)
    assert shapes["cos"] == (1, 1, 8, 16) and shapes["key_cache.2"] == (1, 2, 64, 16)
    assert {t.name: t.shape for t in block.outputs}["new_value.1"] == (1, 2, 8, 16)
    slots = block.slots()
    assert min(slots) == FIRST_IO_SLOT and max(slots) < ANE_TILE_COUNT
    assert [slots[s].role for s in sorted(slots)][: len(block.outputs)] == ["output"] * 7
    assert slots[FIRST_IO_SLOT].name == "hidden_out" and slots[FIRST_IO_SLOT].h == 8
    assert block.container == default_output(Path(block.graph)).name
    embed = plan.chunks[0]
    assert not embed.on_ane and embed.container is None and embed.bo_bytes == 0
