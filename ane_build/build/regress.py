"""Watch mode's regression table: each model after a build cycle against the cycle before.

Per model: did the compile succeed, did the container change, the check's verdict and its
largest error, each marked better, worse or the same. Read from the build records and deploy
records on disk. This module must not import doit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .context import BuildContext
from .deploying import deploy_record_path
from .outcome import FAILED
from .state import FileState, read_json
from .summary import table

__all__ = ["ModelSnapshot", "regression_table", "snapshot"]


@dataclass(frozen=True)
class ModelSnapshot:
    """What one model looks like after a cycle (None: no such step, or never ran)."""

    compiled: bool | None
    container: str | None
    passed: bool | None
    max_err: float | None


def snapshot(ctx: BuildContext) -> dict[str, ModelSnapshot]:
    """Every model's snapshot, from the files on disk."""
    out = {}
    for name in ctx.graph.names:
        node = ctx.models.get(name)
        compiled = None
        if node is not None and node.compile_outputs is not None:
            outcome = ctx.outcomes.get(name, "compile")
            compiled = None if outcome is None else outcome.get("status") != FAILED
        convert = ctx.records.get(name, "convert") or {}
        state = FileState.from_json(convert.get("output"))
        deploy = read_json(deploy_record_path(ctx.root, name)) or {}
        check = deploy.get("check") if isinstance(deploy, dict) else None
        out[name] = ModelSnapshot(
            compiled=compiled,
            container=state.sha256 if state else None,
            passed=None if not isinstance(check, dict) else bool(check.get("passed")),
            max_err=_max_err(check),
        )
    return out


def _max_err(check: Any) -> float | None:
    if not isinstance(check, dict) or not check.get("outputs"):
        return None
    values = [o.get("max_abs") for o in check["outputs"]]
    return max(v if isinstance(v, float | int) else math.inf for v in values)


def _trend(before: float | None, after: float) -> str:
    if before is None:
        return "new"
    if before == after:
        return "same"
    return "better" if after < before else "worse"


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def _cells(before: ModelSnapshot | None, after: ModelSnapshot) -> tuple[str, str, str, str]:
    prev = before or ModelSnapshot(None, None, None, None)
    compiled = "-" if after.compiled is None else ("ok" if after.compiled else "FAILED")
    if prev.compiled is not None and prev.compiled != after.compiled:
        compiled += " (was " + ("ok" if prev.compiled else "FAILED") + ")"
    container = "changed" if after.container != prev.container else "same"
    verdict = _verdict(after.passed)
    if prev.passed is not None and prev.passed != after.passed:
        verdict += f" (was {_verdict(prev.passed)})"
    error = "-" if after.max_err is None else f"{after.max_err:.3e}"
    if after.max_err is not None:
        error += f" ({_trend(prev.max_err, after.max_err)})"
    return compiled, container, verdict, error


def regression_table(
    before: dict[str, ModelSnapshot], after: dict[str, ModelSnapshot], models: list[str]
) -> list[str]:
    """The table for ``models`` (those the cycle built), one aligned row each."""
    rows: list[tuple[str, ...]] = [("model", "compile", "container", "check", "max err")]
    for name in models:
        if name in after:
            rows.append((name, *_cells(before.get(name), after[name])))
    return table(rows) if len(rows) > 1 else []
