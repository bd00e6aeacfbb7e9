"""The state of every model, read from disk: the run's summary table and ``build/report.json``.

Everything here comes from files (outcomes, build records, deploy records), never from what one
process remembers, so the summary of ``doit -n 4`` is the summary of ``doit``. Schema of the
report: docs/builds.md. This module must not import doit.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import write_atomic
from .context import BuildContext
from .deploying import deploy_record_path
from .layout import REPORT_FILE, build_version
from .outcome import FAILED
from .state import read_json

REPORT_SCHEMA = 1
STEPS = ("config", "compile", "convert", "verify", "deploy")


@dataclass
class ModelState:
    """One model as the files on disk describe it after a run.

    Attributes:
        name: The model.
        steps: Step -> its last outcome, with ``this_run`` (bool) added.
        failed: The first step whose last outcome is a failure, or None.
        touched: Whether any step ran in this run.
        deploy: The deploy record (``build/deploy/<model>.json``), or empty.
        container: Path (relative), size and whether it exists.
    """

    name: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: str | None = None
    touched: bool = False
    deploy: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """The one-line reason of the failure."""
        return None if self.failed is None else self.steps[self.failed].get("error")

    @property
    def check(self) -> dict[str, Any] | None:
        """The last deploy's check report (JSON form), or None."""
        check = self.deploy.get("check")
        return check if isinstance(check, dict) else None


def collect(ctx: BuildContext, extra: dict[str, str] | None = None) -> list[ModelState]:
    """Every model's state after this run (``ctx.run_id``), sorted by name.

    Args:
        ctx: The run's context.
        extra: Failures doit reported that no action recorded (task id -> one line), e.g. a
            file dependency that does not exist.
    """
    states = []
    for name in ctx.graph.names:
        state = ModelState(name)
        for step in _steps_of(ctx, name):
            outcome = ctx.outcomes.get(name, step)
            if outcome is None:
                continue
            outcome["this_run"] = outcome.get("run") == ctx.run_id
            state.steps[step] = outcome
            state.touched |= outcome["this_run"]
        for task, line in (extra or {}).items():
            step, _, model = task.partition(":")
            if model == name and step not in state.steps:
                state.steps[step] = {"status": FAILED, "error": line, "this_run": True}
                state.touched = True
        state.failed = next(
            (s for s in STEPS if state.steps.get(s, {}).get("status") == FAILED), None
        )
        _describe_outputs(ctx, state)
        states.append(state)
    return states


def _steps_of(ctx: BuildContext, name: str) -> tuple[str, ...]:
    """The steps a model has now (an outcome of a step it no longer has is stale)."""
    if name in ctx.graph.broken:
        return ("config",)
    if ctx.models[name].compile_outputs is None:
        return STEPS[2:]
    return STEPS[1:]


def _describe_outputs(ctx: BuildContext, state: ModelState) -> None:
    node = ctx.models.get(state.name)
    if node is None:
        return
    data = read_json(deploy_record_path(ctx.root, state.name))
    state.deploy = data if isinstance(data, dict) else {}
    try:
        size: int | None = os.path.getsize(node.output)
    except OSError:
        size = None
    state.container = {"path": ctx.rel(node.output), "size": size}


def _max_err(check: dict[str, Any] | None) -> str:
    if not check:
        return "-"
    errors = [o.get("max_abs") for o in check.get("outputs", [])]
    numbers = [e if isinstance(e, float | int) else math.inf for e in errors]
    return f"{max(numbers):.2e}" if numbers else "-"


def _verdict(state: ModelState) -> str:
    check = state.check
    if check is not None:
        return "PASS" if check.get("passed") else "FAIL"
    note = state.deploy.get("check_note")
    return "off" if note == "not asked for" else ("no io" if note else "-")


def _row(state: ModelState) -> tuple[str, ...]:
    compile_step = state.steps.get("compile")
    if compile_step is None:
        compiled = "-"
    elif compile_step.get("status") == FAILED:
        compiled = "FAILED"
    else:
        compiled = "ok" if compile_step["this_run"] else "up to date"
    deploy = state.deploy
    size = state.container.get("size")
    td = f"{deploy['td_count']} x 0x{deploy['td_size']:x}" if "td_count" in deploy else "-"
    where = "simulator" if deploy.get("simulated") else deploy.get("device", "-")
    submit = f"{deploy['submit_ms']:.2f} ms" if "submit_ms" in deploy else "-"
    return (
        state.name,
        compiled,
        state.container.get("path", "-"),
        f"{size:,}" if size is not None else "-",
        td,
        where,
        submit,
        _max_err(state.check),
        _verdict(state),
    )


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def all_up_to_date(count: int) -> str:
    """The summary of a run that had nothing to do."""
    return f"summary: all {count} model(s) up to date"


def summary_lines(states: list[ModelState]) -> list[str]:
    """The end-of-run summary: a table of the models this run touched, then every failure."""
    touched = [s for s in states if s.touched]
    failed = [s for s in states if s.failed is not None]
    if not touched and not failed:
        return [all_up_to_date(len(states))]
    lines = []
    if touched:
        header = ("model", "compile", "container", "size", "td", "deployed to", "submit")
        lines += table([(*header, "max err", "check"), *(_row(s) for s in touched)])
    built = len([s for s in touched if s.failed is None])
    rest = len(states) - len(touched)
    tally = f"{built} model(s) built or deployed, {rest} already up to date"
    lines.append(tally + (f", {len(failed)} FAILED" if failed else ""))
    for state in failed:
        lines.append(f"FAILED {state.name}: {state.failed}: {state.error}")
    if any(s.deploy.get("simulated") for s in touched):
        lines.append("(simulator: submissions were validated, not run on ANE hardware)")
    return lines


def split_lines(ctx: BuildContext, states: list[ModelState]) -> list[str]:
    """Per ``[llm]`` model: a failed split, and the programs that run on the CPU (no ANE steps).

    The CPU line is shown when the model's programs were part of this run's table.
    """
    touched = {s.name for s in states if s.touched}
    lines = []
    for name, split in ctx.graph.splits.items():
        outcome = ctx.outcomes.get(name, "split") or {}
        if outcome.get("run") == ctx.run_id and outcome.get("status") == FAILED:
            lines.append(f"FAILED {name}: split: {outcome.get('error')}")
        if split.cpu_programs and touched & set(split.programs):
            shown = ", ".join(split.cpu_programs)
            lines.append(f"{shown}: runs on the CPU (onnxruntime): no compile, convert or deploy")
    return lines


def _splits_json(ctx: BuildContext) -> dict[str, Any]:
    out = {}
    for name, split in ctx.graph.splits.items():
        outcome = ctx.outcomes.get(name, "split")
        out[name] = {
            "checkpoint": ctx.rel(split.checkpoint),
            "output": ctx.rel(split.output),
            "programs": list(split.programs),
            "cpu_programs": list(split.cpu_programs),
            "split": _step_json(outcome | {"this_run": outcome.get("run") == ctx.run_id})
            if outcome
            else None,
        }
    return out


def write_report(ctx: BuildContext, states: list[ModelState], orphans: list[str]) -> Path:
    """Write ``build/report.json`` (atomically); return its path."""
    finished = time.time()
    models = {}
    for state in states:
        models[state.name] = {
            "status": "failed" if state.failed else "ok",
            "failed_step": state.failed,
            "error": state.error,
            "steps": {step: _step_json(outcome) for step, outcome in state.steps.items()},
            "container": state.container,
            "deploy": {k: v for k, v in state.deploy.items() if k not in ("check", "summary")},
            "check": state.check,
        }
    body = {
        "schema": REPORT_SCHEMA,
        "ane_build": build_version(),
        "run": ctx.run_id,
        "started": ctx.started,
        "finished": finished,
        "seconds": round(finished - ctx.started, 3),
        "counts": {
            "models": len(states),
            "touched": sum(s.touched for s in states),
            "failed": sum(s.failed is not None for s in states),
        },
        "models": models,
        "splits": _splits_json(ctx),
        "orphans": orphans,
    }
    path = ctx.root / REPORT_FILE
    write_atomic(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return path


def _step_json(outcome: dict[str, Any]) -> dict[str, Any]:
    status = outcome.get("status")
    if status != FAILED and not outcome.get("this_run"):
        status = "up to date"
    keep = ("reasons", "error", "details", "seconds", "finished", "compiler_seconds")
    return {"status": status, "this_run": bool(outcome.get("this_run"))} | {
        k: outcome[k] for k in keep if k in outcome
    }
