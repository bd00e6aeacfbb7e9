"""A model's ``[llm]`` table as the build sees it: the split step and the programs it feeds.

The programs of a split are known from the checkpoint's ``config.json`` and the settings alone
(`plan_llm`), so the task graph can list them before anything is split. Each ANE program becomes
a model of its own, ``<model>.<program>``, whose source is its chunk graph; CPU programs
(``embed``) are listed here so the summary can say they get no ANE steps. This module reads
only the checkpoint's ``config.json`` and folder listing; it must not split or run anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AneError
from ..llm.checkpoint import TOKENIZER_FILES, checkpoint_files
from ..llm.pipeline import LlmConfig, LlmPlan, ProgramTask, plan_llm
from ..llm.spec import CONFIG_FILE, LlamaSpec

__all__ = ["LlmSplit", "plan_model", "program_name", "split_inputs"]


def program_name(model: str, program: str) -> str:
    """The build's name of one program of a split model (a model name of its own)."""
    return f"{model}.{program}"


@dataclass(frozen=True)
class LlmSplit:
    """One ``[llm]`` model's split step, as plain data (cached in the task graph).

    Attributes:
        model: The model's name (its config file stem).
        checkpoint: The checkpoint folder.
        output: The split folder.
        settings: The split settings (chunks, context, prefill), for the up-to-date check.
        targets: Every file the split writes (graphs, then the manifest).
        programs: ANE program names (``<model>.<program>``), in run order.
        cpu_programs: Programs that run on the CPU (no compile, convert or deploy).
    """

    model: str
    checkpoint: str
    output: str
    settings: dict[str, Any]
    targets: tuple[str, ...]
    programs: tuple[str, ...]
    cpu_programs: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LlmSplit:
        """Read back `dataclasses.asdict` output (lists become tuples)."""
        fields = dict(raw)
        for key in ("targets", "programs", "cpu_programs"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


def split_inputs(checkpoint: Path) -> list[str]:
    """The checkpoint files a split reads (config, shards, tokenizer files that exist)."""
    try:
        files = checkpoint_files(checkpoint)
    except AneError:
        files = [checkpoint / CONFIG_FILE]
    extra = [checkpoint / n for n in TOKENIZER_FILES if (checkpoint / n).is_file()]
    return [os.fspath(p) for p in (*files, *extra) if p.is_file()]


def plan_model(name: str, llm: LlmConfig, checkpoint: Path, root: Path) -> tuple[LlmSplit, LlmPlan]:
    """The split step and per-program tasks of one ``[llm]`` model.

    Raises:
        AneError: The checkpoint's ``config.json`` is missing, unreadable or unsupported, or
            the settings do not fit the model or the ANE (the message says which).
    """
    plan = plan_llm(llm, LlamaSpec.from_dir(checkpoint), model=name, root=root)
    split = LlmSplit(
        model=name,
        checkpoint=os.fspath(checkpoint),
        output=os.fspath(plan.output),
        settings=llm.settings().model_dump(mode="json"),
        targets=tuple(os.fspath(p) for p in (*plan.split_targets, *_copies(checkpoint, plan))),
        programs=tuple(program_name(name, p.name) for p in _on_ane(plan.programs, True)),
        cpu_programs=tuple(program_name(name, p.name) for p in _on_ane(plan.programs, False)),
    )
    return split, plan


def _copies(checkpoint: Path, plan: LlmPlan) -> list[Path]:
    """The config and tokenizer files the split copies beside its graphs."""
    names = (CONFIG_FILE, *TOKENIZER_FILES)
    return [plan.output / n for n in names if (checkpoint / n).is_file()]


def _on_ane(programs: tuple[ProgramTask, ...], ane: bool) -> list[ProgramTask]:
    return [p for p in programs if (p.container is not None) == ane]
