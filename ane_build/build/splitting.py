"""The split action of an ``[llm]`` model: its checkpoint into the chunk graphs its programs use.

Every file is written atomically by the split itself; a graph whose bytes come out the same is
unchanged content, so only the programs whose weights changed are rebuilt downstream (the file
checker compares contents). Task definitions live in `tasks`; this module must not import doit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import AneError
from ..llm.plan import SplitSettings
from ..llm.split import split_checkpoint
from .actions import forced_reason, snapshot
from .context import context
from .layout import build_version
from .llmsplit import split_inputs
from .outcome import Step, StepFailed
from .reasons import split_reasons
from .taskgraph import settings_digest

__all__ = ["split_action"]


def split_action(name: str) -> dict[str, Any] | StepFailed:
    """Doit action: split one ``[llm]`` model's checkpoint, printing what was written."""
    ctx = context()
    split = ctx.graph.splits[name]
    step = Step(ctx, "split", name)
    step.because(split_reasons(ctx, name) or [forced_reason(ctx)])
    states = snapshot(ctx, tuple(split_inputs(Path(split.checkpoint))))
    try:
        result = split_checkpoint(
            Path(split.checkpoint),
            Path(split.output),
            SplitSettings.model_validate(split.settings),
            # A split with this checkpoint digest and these settings is reused (cheap).
            force=ctx.forced,
        )
    except AneError as exc:
        return step.fail(exc)
    ctx.records.put(
        name,
        "split",
        {
            "version": build_version(),
            "inputs": {p: state.to_json() for p, state in states.items()},
            "settings": split.settings,
            "output": split.output,
            "finished": time.time(),
        },
    )
    ctx.save()
    step.say(result.summary()[-1])
    cpu = ", ".join(split.cpu_programs)
    if cpu:
        step.say(f"{cpu}: runs on the CPU (no compile, convert or deploy)")
    step.done()
    return {"settings": settings_digest(split.settings)}
