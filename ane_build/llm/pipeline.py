"""One ``[llm]`` table to many programs: the tasks a build expands a checkpoint into. Pure.

`LlmConfig` is the ``[llm]`` table a model config will carry (``checkpoint``, ``chunks``,
``context``, ``prefill``, ``output``). `plan_llm` turns it and the checkpoint's `LlamaSpec` into
the split's targets and one `ProgramTask` per program, each naming what the build's steps need:
the graph the split writes (the compile step's source), the container convert writes, the
tensor slots convert records (so deploy and check can run it), whether it goes to the ANE at all.
The build layer turns these into split -> per-program compile -> convert -> deploy + check
tasks. No I/O: the caller reads the spec (`LlamaSpec.from_dir`) and hashes the checkpoint files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..artifacts.spec import TensorSlot
from .manifest import MANIFEST_FILE
from .plan import Kind, SplitSettings, TensorPlan, Variant, plan_split
from .spec import LlamaSpec

DEFAULT_OUTPUT = Path("build") / "llm"


class LlmConfig(BaseModel):
    """The ``[llm]`` table of a model config.

    Attributes:
        checkpoint: The Hugging Face checkpoint folder (relative to the project root).
        chunks: Layer groups, or ``"auto"``.
        context: Static context the KV caches hold.
        prefill: Positions per prefill program (1: none).
        output: The split folder; ``build/llm/<model>`` by default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = Field(
        description="The Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer)."
    )
    chunks: int | Literal["auto"] = Field(
        default="auto", description='Layer groups, or "auto" for the fewest that fit the ANE.'
    )
    context: int = Field(default=512, ge=2, description="Positions the KV caches hold.")
    prefill: int = Field(default=64, ge=1, description="Positions per prefill program (1: none).")
    output: Path | None = Field(
        default=None, description="The split folder; build/llm/<name> by default."
    )

    def settings(self) -> SplitSettings:
        """The split settings this table asks for."""
        return SplitSettings.of(chunks=self.chunks, context=self.context, prefill=self.prefill)


@dataclass(frozen=True)
class ProgramTask:
    """One program of a split, as the build's per-program steps see it.

    Attributes:
        name: ``<chunk>.<variant>`` (``embed`` for the embedding): the task name suffix.
        chunk: The chunk it belongs to.
        kind: ``embed``, ``block`` or ``head``.
        variant: ``decode``, ``prefill`` or ``any``.
        graph: The graph the split writes; the compile step's source.
        container: The container convert writes; None for a CPU-only chunk (no compile,
            convert or deploy).
        io: The tensor slots convert records (empty for a CPU-only chunk).
        inputs: The graph's inputs, for check data.
        outputs: The graph's outputs.
    """

    name: str
    chunk: str
    kind: Kind
    variant: Variant
    graph: Path
    container: Path | None
    io: dict[int, TensorSlot]
    inputs: tuple[TensorPlan, ...]
    outputs: tuple[TensorPlan, ...]


@dataclass(frozen=True)
class LlmPlan:
    """What a build does for one ``[llm]`` table.

    Attributes:
        output: The split folder.
        split_targets: Every file the split task writes (graphs, then the manifest).
        programs: One task per program, in run order.
    """

    output: Path
    split_targets: tuple[Path, ...]
    programs: tuple[ProgramTask, ...]


def plan_llm(config: LlmConfig, spec: LlamaSpec, *, model: str, root: Path) -> LlmPlan:
    """Expand an ``[llm]`` table into the split's targets and the per-program tasks.

    Args:
        config: The table.
        spec: The checkpoint's shape (from its ``config.json``).
        model: The model's name (its config file's stem), for the default output folder.
        root: The project root paths are relative to.

    Raises:
        PlanError: The settings do not fit the model or the ANE (see `plan_split`).
    """
    output = root / (config.output or DEFAULT_OUTPUT / model)
    plan = plan_split(spec, config.settings())
    programs = tuple(
        ProgramTask(
            name=chunk.name,
            chunk=chunk.chunk,
            kind=chunk.kind,
            variant=chunk.variant,
            graph=output / chunk.graph,
            container=output / chunk.container if chunk.container else None,
            io=chunk.slots() if chunk.on_ane else {},
            inputs=chunk.inputs,
            outputs=chunk.outputs,
        )
        for chunk in plan.chunks
    )
    targets = (*(p.graph for p in programs), output / MANIFEST_FILE)
    return LlmPlan(output=output, split_targets=targets, programs=programs)
