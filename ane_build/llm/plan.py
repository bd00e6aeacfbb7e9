"""How a checkpoint splits into static-shape chunk programs, and whether they fit: pure planning.

A split is the embedding (on the CPU), ``K`` groups of decoder layers (``block_i``) and the LM head
(``head_j``, over slices of the vocabulary when one would be too big), each block as a decode
program (one position) and a prefill program (``S`` positions). Sizes are computed from the
shapes alone, before anything is read or allocated: each container must stay under
`CONTAINER_LIMIT`, each program's tensors must fit the tile slots, and all the programs' buffer
objects together must fit the ANE address space (`uapi.ANE_ADDRESS_SPACE`). The split, the manifest
and the build graph all take their names, shapes and files from here. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..artifacts.spec import TensorSlot
from ..convert import default_output
from ..driver.uapi import ANE_ADDRESS_SPACE, ANE_TILE_COUNT, PAGE_SIZE, round_up
from ..formats.tiling import layout_for
from ._validate import validate
from .errors import PlanError
from .spec import LlamaSpec

# A chunk's container (graph plus base64 payloads) stays under 1 GiB: well inside protobuf's 2 GiB
# and small enough to upload, verify and reference-check one program at a time.
CONTAINER_LIMIT = 1 << 30
# anecc's slot convention (DESIGN section 3): 2 and 3 are scratch, outputs from slot 4, then inputs.
FIRST_IO_SLOT = 4
IO_SLOTS = ANE_TILE_COUNT - FIRST_IO_SLOT
# Room assumed for a program's microcode; its compiled weights are assumed as big as the fp16
# weights of its graph. Estimates, until a compiler says otherwise.
MICROCODE_ALLOWANCE = 1 << 20
# Graph bytes besides the weights: node and tensor names, shape constants.
_GRAPH_OVERHEAD = 64 << 10
_LAYER_OVERHEAD = 8 << 10
FP16_BYTES = 2

Kind = Literal["embed", "block", "head"]
Variant = Literal["decode", "prefill", "any"]


class TensorPlan(BaseModel):
    """One input or output of a chunk graph.

    Attributes:
        name: The graph's tensor name (also its ``ane.io`` slot name).
        shape: Its static shape (``-1`` for the embedding's free sequence length).
        dtype: ``float16`` for everything the engine reads or writes; ``int64`` token ids.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int, ...]
    dtype: Literal["float16", "int64"] = "float16"

    def buffer_bytes(self) -> int:
        """Bytes of the tensor's buffer object in the ANE layout."""
        return layout_for(self.shape)[2]

    def nchw(self) -> tuple[int, int, int, int]:
        """The shape as the engine's four dimensions (leading 1s added)."""
        n, c, h, w = (1,) * (4 - len(self.shape)) + self.shape
        return n, c, h, w


class ChunkPlan(BaseModel):
    """One chunk program: its graph file, what it computes, its tensors and estimated sizes.

    Attributes:
        name: Program name, ``<chunk>.<variant>`` (``embed`` for the embedding).
        chunk: The chunk it belongs to (``block_0``, ``head_0``, ``embed``).
        kind: ``embed``, ``block`` or ``head``.
        variant: ``decode`` (one position), ``prefill`` (``positions`` at once) or ``any``.
        positions: Positions per run (``S``); None for the embedding (any length).
        graph: The ONNX graph's file name in the split folder.
        container: The ``_ane.onnx`` container built from the graph; None for CPU-only chunks.
        layers: Decoder layers ``[first, end)`` of a block.
        vocab: Vocabulary slice ``[first, end)`` of a head.
        inputs: Graph inputs, in order.
        outputs: Graph outputs, in order.
        params: Weights in the graph.
        graph_bytes: Estimated size of the graph file.
        container_bytes: Estimated size of the container (graph + base64 microcode and weights).
        bo_bytes: Estimated ANE address space of the loaded program (command buffer with
            microcode and weights, bootstrap, one buffer per tensor).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    chunk: str
    kind: Kind
    variant: Variant
    positions: int | None
    graph: str
    container: str | None
    layers: tuple[int, int] | None = None
    vocab: tuple[int, int] | None = None
    inputs: tuple[TensorPlan, ...]
    outputs: tuple[TensorPlan, ...]
    params: int = Field(ge=0)
    graph_bytes: int = Field(ge=0)
    container_bytes: int = Field(ge=0)
    bo_bytes: int = Field(ge=0)

    @property
    def on_ane(self) -> bool:
        """Whether the chunk is meant to run as an ANE program (the embedding is not)."""
        return self.container is not None

    def slots(self) -> dict[int, TensorSlot]:
        """The ``io`` table a container of this chunk carries.

        anecc's slot convention: outputs from `FIRST_IO_SLOT`, then inputs, each tensor in the
        default ANE layout.
        """
        roles = [("output", t) for t in self.outputs] + [("input", t) for t in self.inputs]
        slots = {}
        for index, (role, tensor) in enumerate(roles):
            n, c, h, w = tensor.nchw()
            slots[FIRST_IO_SLOT + index] = TensorSlot(
                role=role,  # type: ignore[arg-type]  # "input" or "output", as listed above
                name=tensor.name,
                n=n,
                c=c,
                h=h,
                w=w,
            )
        return slots

    def describe(self) -> str:
        """One line: what the program holds and its estimated sizes."""
        what = "token ids -> hidden"
        if self.layers:
            first, end = self.layers
            what = f"layer {first}" if end - first == 1 else f"layers {first}-{end - 1}"
        elif self.vocab:
            what = f"vocab {self.vocab[0]}-{self.vocab[1] - 1}"
        where = "ANE" if self.on_ane else "CPU"
        return (
            f"{self.name:<16} {where:<3} {what:<18} {self.params:>14,} params  container "
            f"~{_mib(self.container_bytes)}  BOs ~{_mib(self.bo_bytes)}"
        )


class SplitSettings(BaseModel):
    """What a split is asked for: ``--chunks``, ``--context``, ``--prefill`` and the limits.

    Attributes:
        chunks: Number of layer groups, or ``"auto"`` for the fewest that fit.
        context: Static context ``N``: positions the KV caches hold.
        prefill: Positions of a prefill program ``S``; 1 builds no prefill programs (prompts
            then run through the decode programs one position at a time).
        container_limit: Largest container allowed per chunk.
        address_space: ANE address space all loaded programs share.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunks: int | Literal["auto"] = "auto"
    context: int = Field(default=512, ge=2)
    prefill: int = Field(default=64, ge=1)
    container_limit: int = Field(default=CONTAINER_LIMIT, gt=0)
    address_space: int = Field(default=ANE_ADDRESS_SPACE, gt=0)

    @classmethod
    def of(cls, **values: object) -> SplitSettings:
        """Settings from keyword values, a bad one a `PlanError` naming it.

        Raises:
            PlanError: A value is out of range (one line per problem).
        """
        return validate(cls, values, "split settings", PlanError)


class SplitPlan(BaseModel):
    """The programs of a split and their budget.

    Attributes:
        settings: What was asked for.
        blocks: Number of layer groups chosen.
        chunks: Every program: the embedding, then per block decode and prefill, then the
            head parts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: SplitSettings
    blocks: int
    chunks: tuple[ChunkPlan, ...]

    @property
    def resident_bytes(self) -> int:
        """Estimated ANE address space of all programs loaded at once."""
        return sum(c.bo_bytes for c in self.chunks if c.on_ane)

    def report(self) -> list[str]:
        """Human lines: one per program, then the totals against the limits."""
        s = self.settings
        lines = [c.describe() for c in self.chunks]
        biggest = max((c.container_bytes for c in self.chunks if c.on_ane), default=0)
        lines.append(
            f"{self.blocks} block chunk(s); largest container ~{_mib(biggest)} of "
            f"{_mib(s.container_limit)} allowed; all programs' BOs ~{_mib(self.resident_bytes)} "
            f"of {_mib(s.address_space)} ANE address space (estimates from shapes)"
        )
        return lines


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def group_layers(layers: int, groups: int) -> list[tuple[int, int]]:
    """``layers`` split into ``groups`` contiguous ranges, the first ones one layer longer."""
    base, extra = divmod(layers, groups)
    out, start = [], 0
    for index in range(groups):
        end = start + base + (1 if index < extra else 0)
        out.append((start, end))
        start = end
    return out


def _estimates(params: int, tensors: Sequence[TensorPlan], extra: int) -> tuple[int, int, int]:
    """(graph, container, BO) bytes of a program with ``params`` fp16 weights."""
    weights = params * FP16_BYTES
    graph = weights + extra + _GRAPH_OVERHEAD
    base64 = 4 * ((weights + MICROCODE_ALLOWANCE + 2) // 3)
    container = graph + base64
    command = round_up(MICROCODE_ALLOWANCE + weights, PAGE_SIZE)
    bos = command + PAGE_SIZE + sum(t.buffer_bytes() for t in tensors)
    return graph, container, bos


def cache_names(layer: int) -> tuple[str, str, str, str]:
    """Names of a layer's cache inputs and new-row outputs: key, value, new key, new value."""
    return (f"key_cache.{layer}", f"value_cache.{layer}", f"new_key.{layer}", f"new_value.{layer}")


def block_plan(
    spec: LlamaSpec, index: int, layers: tuple[int, int], positions: int, context: int
) -> ChunkPlan:
    """The program of layers ``[first, end)`` for ``positions`` at a time, ``context`` cached."""
    s, n, h, d, kv = positions, context, spec.hidden_size, spec.head_dim, spec.num_kv_heads
    inputs = [
        TensorPlan(name="hidden", shape=(1, s, h)),
        TensorPlan(name="cos", shape=(1, 1, s, d)),
        TensorPlan(name="sin", shape=(1, 1, s, d)),
        TensorPlan(name="mask", shape=(1, 1, s, n)),
    ]
    outputs = [TensorPlan(name="hidden_out", shape=(1, s, h))]
    for layer in range(*layers):
        key, value, new_key, new_value = cache_names(layer)
        inputs += [
            TensorPlan(name=key, shape=(1, kv, n, d)),
            TensorPlan(name=value, shape=(1, kv, n, d)),
        ]
        outputs += [
            TensorPlan(name=new_key, shape=(1, kv, s, d)),
            TensorPlan(name=new_value, shape=(1, kv, s, d)),
        ]
    count = layers[1] - layers[0]
    params = count * spec.layer_params
    # The causal mask among the new positions is a float32 constant of the graph.
    graph, container, bos = _estimates(
        params, inputs + outputs, count * _LAYER_OVERHEAD + 4 * s * s
    )
    variant: Variant = "decode" if positions == 1 else "prefill"
    name = f"block_{index}.{variant}"
    return ChunkPlan(
        name=name,
        chunk=f"block_{index}",
        kind="block",
        variant=variant,
        positions=s,
        graph=f"{name}.onnx",
        container=default_output_name(f"{name}.onnx"),
        layers=layers,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        params=params,
        graph_bytes=graph,
        container_bytes=container,
        bo_bytes=bos,
    )


def head_plan(spec: LlamaSpec, index: int, vocab: tuple[int, int]) -> ChunkPlan:
    """The final norm and the LM head columns ``[first, end)``, one position at a time.

    Prefill needs only the last position's logits, so the decode head serves it: no prefill
    head is built (it would hold a second copy of the head's weights on the ANE).
    """
    h = spec.hidden_size
    width = vocab[1] - vocab[0]
    inputs = (TensorPlan(name="hidden", shape=(1, 1, h)),)
    outputs = (TensorPlan(name="logits", shape=(1, 1, width)),)
    params = width * h + h
    graph, container, bos = _estimates(params, inputs + outputs, 0)
    name = f"head_{index}.decode"
    return ChunkPlan(
        name=name,
        chunk=f"head_{index}",
        kind="head",
        variant="decode",
        positions=1,
        graph=f"{name}.onnx",
        container=default_output_name(f"{name}.onnx"),
        vocab=vocab,
        inputs=inputs,
        outputs=outputs,
        params=params,
        graph_bytes=graph,
        container_bytes=container,
        bo_bytes=bos,
    )


def embed_plan(spec: LlamaSpec) -> ChunkPlan:
    """The embedding lookup: token ids to hidden states, any length, on the CPU."""
    params = spec.vocab_size * spec.hidden_size
    graph = params * FP16_BYTES + _GRAPH_OVERHEAD
    return ChunkPlan(
        name="embed",
        chunk="embed",
        kind="embed",
        variant="any",
        positions=None,
        graph="embed.onnx",
        container=None,
        inputs=(TensorPlan(name="input_ids", shape=(1, -1), dtype="int64"),),
        outputs=(TensorPlan(name="hidden", shape=(1, -1, spec.hidden_size)),),
        params=params,
        graph_bytes=graph,
        container_bytes=0,
        bo_bytes=0,
    )


def default_output_name(graph: str) -> str:
    """The container file name `convert` gives a graph file name."""
    return default_output(Path(graph)).name


def _check_settings(spec: LlamaSpec, settings: SplitSettings) -> None:
    if spec.max_positions is not None and settings.context > spec.max_positions:
        raise PlanError(
            f"--context {settings.context} is beyond the model's max_position_embeddings "
            f"({spec.max_positions})"
        )
    if settings.prefill > settings.context:
        raise PlanError(f"--prefill {settings.prefill} is longer than --context {settings.context}")
    if settings.chunks != "auto" and not 1 <= settings.chunks <= spec.num_layers:
        raise PlanError(
            f"--chunks {settings.chunks}: the model has {spec.num_layers} layers; "
            f"use 1 to {spec.num_layers} or auto"
        )


def _blocks(spec: LlamaSpec, settings: SplitSettings, groups: int) -> list[ChunkPlan]:
    positions = [1] if settings.prefill == 1 else [1, settings.prefill]
    return [
        block_plan(spec, index, layers, s, settings.context)
        for index, layers in enumerate(group_layers(spec.num_layers, groups))
        for s in positions
    ]


def problems(chunks: Sequence[ChunkPlan], settings: SplitSettings) -> list[str]:
    """Why programs do not fit one by one: a container over the limit, too many tensors."""
    out = []
    for chunk in chunks:
        if not chunk.on_ane:
            continue
        if chunk.container_bytes > settings.container_limit:
            out.append(
                f"{chunk.name}: container ~{chunk.container_bytes:,} bytes is over the "
                f"{settings.container_limit:,}-byte limit"
            )
        tensors = len(chunk.inputs) + len(chunk.outputs)
        if tensors > IO_SLOTS:
            out.append(
                f"{chunk.name}: {tensors} tensors but a program has {IO_SLOTS} tile slots "
                f"(slots {FIRST_IO_SLOT}-{ANE_TILE_COUNT - 1})"
            )
    return out


def _head_parts(spec: LlamaSpec, settings: SplitSettings) -> list[ChunkPlan]:
    """The LM head in the fewest vocabulary slices whose containers fit."""
    whole = head_plan(spec, 0, (0, spec.vocab_size))
    parts = max(1, -(-whole.container_bytes // settings.container_limit))
    while parts <= spec.vocab_size:
        heads = [
            head_plan(spec, index, vocab)
            for index, vocab in enumerate(group_layers(spec.vocab_size, parts))
        ]
        if not problems(heads, settings):
            return heads
        parts += 1
    raise PlanError(
        f"the LM head does not fit even one vocabulary column per program: "
        f"{'; '.join(problems([head_plan(spec, 0, (0, 1))], settings))}"
    )


def plan_split(spec: LlamaSpec, settings: SplitSettings) -> SplitPlan:
    """Choose the programs of a split and check that they fit, from shapes alone.

    With ``chunks="auto"`` the fewest layer groups whose programs each fit are chosen.

    Raises:
        PlanError: The settings contradict the model, a program cannot fit (names it and its
            size against the limit), or all programs together need more ANE address space than
            there is (with the numbers, and what would fit).
    """
    _check_settings(spec, settings)
    heads = _head_parts(spec, settings)
    if settings.chunks == "auto":
        for groups in range(1, spec.num_layers + 1):
            blocks = _blocks(spec, settings, groups)
            if not problems(blocks, settings):
                break
        else:
            raise PlanError(
                "the model does not fit even with one layer per chunk:\n"
                + "\n".join(problems(blocks, settings))
            )
    else:
        groups = settings.chunks
        blocks = _blocks(spec, settings, groups)
        found = problems(blocks, settings)
        if found:
            raise PlanError(f"--chunks {groups} does not fit:\n" + "\n".join(found))
    plan = SplitPlan(settings=settings, blocks=groups, chunks=(embed_plan(spec), *blocks, *heads))
    _check_address_space(plan)
    return plan


def _check_address_space(plan: SplitPlan) -> None:
    limit = plan.settings.address_space
    total = plan.resident_bytes
    if total <= limit:
        return
    decode = sum(c.bo_bytes for c in plan.chunks if c.on_ane and c.variant == "decode")
    prefill = total - decode
    hint = ""
    if prefill and decode <= limit:
        hint = (
            f"; without prefill programs (--prefill 1: prompts then run through the decode "
            f"programs one position at a time) it needs ~{decode:,}, which fits"
        )
    raise PlanError(
        f"the programs need ~{total:,} bytes of ANE address space together (decode "
        f"~{decode:,}, prefill ~{prefill:,}; weights are held once per program) but the ANE "
        f"has {limit:,}{hint}"
    )
