"""Why a model is stale: reasons with old and new values, from our build records.

Used by the actions (printed before each rebuild) and by ``why``; it builds nothing and must not
import doit.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .context import BuildContext
from .state import FileState


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def _describe_change(old: FileState, new: FileState) -> str:
    parts = []
    if old.size != new.size:
        parts.append(f"size {old.size:,} -> {new.size:,}")
    if old.mtime_ns != new.mtime_ns:
        parts.append(f"mtime {_when(old.mtime_ns)} -> {_when(new.mtime_ns)}")
    parts.append(f"sha256 {old.sha256[:12]} -> {new.sha256[:12]}")
    return ", ".join(parts)


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value)


def config_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per setting that differs between two flat settings dicts."""
    return [
        f"config {key} changed: {_show(old.get(key))} -> {_show(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def output_changed(ctx: BuildContext, output: str, saved: Any) -> FileState | None:
    """The output's current state when it differs in content from ``saved``, else None."""
    old = FileState.from_json(saved)
    new = ctx.file_state(output)
    if old is None or new is None or old.sha256 == new.sha256:
        return None
    return new


def convert_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's container is stale; empty when it is up to date."""
    node = ctx.models[name]
    record = ctx.records.get(name, "convert")
    reasons: list[str] = []
    if not os.path.exists(node.output):
        reasons.append(f"output {ctx.rel(node.output)} is missing")
    if record is None:
        return [*reasons, "no build record (never built here, or the state was reset)"]
    saved_output = FileState.from_json(record.get("output"))
    if not reasons and saved_output is not None:
        changed = output_changed(ctx, node.output, record.get("output"))
        if changed is not None:
            change = _describe_change(saved_output, changed)
            reasons.append(f"output {ctx.rel(node.output)} was modified: {change}")
    reasons.extend(config_reasons(record.get("config", {}), node.convert_settings))
    recorded = {p: FileState.from_json(s) for p, s in record.get("inputs", {}).items()}
    for path in node.inputs:
        old = recorded.get(path)
        new = ctx.file_state(path)
        if new is None:
            reasons.append(f"input {ctx.rel(path)} is missing")
        elif old is None:
            reasons.append(f"input {ctx.rel(path)} was added")
        elif old.sha256 != new.sha256:
            reasons.append(f"input {ctx.rel(path)} changed: {_describe_change(old, new)}")
    for path in sorted(recorded.keys() - set(node.inputs)):
        reasons.append(f"input {ctx.rel(path)} was removed")
    return reasons


def deploy_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's deploy is stale."""
    node = ctx.models[name]
    record = ctx.records.get(name, "deploy")
    if record is None:
        return ["never deployed"]
    reasons = config_reasons(record.get("settings", {}), node.deploy_settings)
    container = ctx.file_state(node.output)
    if container is not None and container.sha256 != record.get("container_sha256"):
        reasons.append(f"container {ctx.rel(node.output)} changed since the last deploy")
    return reasons


def why(ctx: BuildContext, names: list[str] | None = None) -> dict[str, list[str]]:
    """Reasons per model (convert and deploy steps), without building anything."""
    out: dict[str, list[str]] = {}
    for name in ctx.models:
        if names and name not in names:
            continue
        reasons = [f"convert: {r}" for r in convert_reasons(ctx, name)]
        reasons += [f"deploy: {r}" for r in deploy_reasons(ctx, name)]
        out[name] = reasons
    ctx.save()
    return out
