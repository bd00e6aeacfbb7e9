"""Why a model is stale: reasons with old and new values, from our build records.

Used by the actions (printed before each rebuild) and by ``why``; it builds nothing and must not
import doit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .context import BuildContext
from .layout import build_version
from .state import FileState


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def describe_change(old: FileState, new: FileState) -> str:
    """Size, mtime and digest of a file, old and new, for what differs."""
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


def version_reasons(record: dict[str, Any]) -> list[str]:
    """A line when the record was written by another ane_build version."""
    old = record.get("version")
    if old == build_version():
        return []
    return [f"ane_build version changed: {old or 'unknown'} -> {build_version()}"]


def output_changed(ctx: BuildContext, output: str, saved: Any) -> FileState | None:
    """The output's current state when it differs in content from ``saved``, else None."""
    old = FileState.from_json(saved)
    new = ctx.file_state(output)
    if old is None or new is None or old.sha256 == new.sha256:
        return None
    return new


def input_reasons(
    ctx: BuildContext,
    recorded: dict[str, Any],
    current: Iterable[str],
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Lines for inputs added, removed, missing or changed since ``recorded`` (path -> state).

    ``labels`` names special inputs (``{tool_path: "tool"}``); others are called "input".
    """
    labels = labels or {}
    saved = {p: FileState.from_json(s) for p, s in recorded.items()}
    paths = list(current)
    reasons: list[str] = []
    for path in paths:
        what = f"{labels.get(path, 'input')} {ctx.rel(path)}"
        old = saved.get(path)
        new = ctx.file_state(path)
        if new is None:
            reasons.append(f"{what} is missing")
        elif old is None:
            reasons.append(f"{what} was added")
        elif old.sha256 != new.sha256:
            reasons.append(f"{what} changed: {describe_change(old, new)}")
    for path in sorted(saved.keys() - set(paths)):
        reasons.append(f"{labels.get(path, 'input')} {ctx.rel(path)} was removed")
    return reasons


def folder_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its POSIX path relative to it (empty when missing)."""
    found: dict[str, Path] = {}
    for parent, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(parent) / name
            found[path.relative_to(folder).as_posix()] = path
    return found


def outputs_reasons(ctx: BuildContext, folder: Path, recorded: dict[str, Any]) -> list[str]:
    """Lines for files of a compile folder added, removed or changed since they were made."""
    current = folder_files(folder)
    reasons = []
    for rel, path in current.items():
        old = FileState.from_json(recorded.get(rel))
        new = ctx.file_state(path)
        shown = ctx.rel(path)
        if old is None:
            reasons.append(f"output {shown} was added by hand")
        elif new is not None and new.sha256 != old.sha256:
            reasons.append(f"output {shown} was modified: {describe_change(old, new)}")
    for rel in sorted(recorded.keys() - current.keys()):
        reasons.append(f"output {ctx.rel(folder / rel)} was removed")
    return reasons


def compile_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's compile step is stale; empty when it is up to date."""
    node = ctx.models[name]
    folder = Path(node.compile_outputs or "")
    reasons = [f"compile input {ctx.rel(p)} does not exist" for p in node.compile_missing]
    if not folder.is_dir():
        reasons.append(f"output folder {ctx.rel(folder)} is missing")
    record = ctx.records.get(name, "compile")
    if record is None:
        return [*reasons, "no build record (never built here, or the state was reset)"]
    reasons += config_reasons(record.get("settings", {}), node.compile_settings)
    labels = {node.tool: "tool"} if node.tool else {}
    reasons += input_reasons(ctx, record.get("inputs", {}), node.compile_inputs, labels)
    if folder.is_dir():
        reasons += outputs_reasons(ctx, folder, record.get("outputs", {}))
    return reasons


def _compiled_reasons(ctx: BuildContext, name: str, record: dict[str, Any]) -> list[str]:
    """Lines for compiled files that differ from those the container was built from."""
    node = ctx.models[name]
    folder = Path(node.compile_outputs or "")
    old = record.get("compiled", {})
    new = ctx.records.get(name, "compile") or {}
    new_files = new.get("outputs", {})
    reasons = []
    for rel in sorted(old.keys() | new_files.keys()):
        before, after = FileState.from_json(old.get(rel)), FileState.from_json(new_files.get(rel))
        shown = ctx.rel(folder / rel)
        if before is None:
            reasons.append(f"compiled {shown} was added")
        elif after is None:
            reasons.append(f"compiled {shown} was removed")
        elif before.sha256 != after.sha256:
            reasons.append(f"compiled {shown} changed: {describe_change(before, after)}")
    return reasons


def convert_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's container is stale; empty when it is up to date."""
    node = ctx.models[name]
    record = ctx.records.get(name, "convert")
    reasons: list[str] = []
    if not os.path.exists(node.output):
        reasons.append(f"output {ctx.rel(node.output)} is missing")
    if record is None:
        return [*reasons, "no build record (never built here, or the state was reset)"]
    reasons += version_reasons(record)
    saved_output = FileState.from_json(record.get("output"))
    if not reasons and saved_output is not None:
        changed = output_changed(ctx, node.output, record.get("output"))
        if changed is not None:
            change = describe_change(saved_output, changed)
            reasons.append(f"output {ctx.rel(node.output)} was modified: {change}")
    reasons.extend(config_reasons(record.get("config", {}), node.convert_settings))
    inputs = [p for p in node.inputs if p != node.manifest]
    recorded = {p: s for p, s in record.get("inputs", {}).items() if p != node.manifest}
    reasons += input_reasons(ctx, recorded, inputs)
    if node.manifest is not None:
        reasons += _compiled_reasons(ctx, name, record)
    copies = record.get("data", {})
    for _, copy in node.data_copies:
        state = ctx.file_state(copy)
        saved = FileState.from_json(copies.get(copy))
        if state is None:
            reasons.append(f"external data copy {ctx.rel(copy)} is missing")
        elif saved is None or saved.sha256 != state.sha256:
            reasons.append(f"external data copy {ctx.rel(copy)} was modified")
    return reasons


def deploy_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's deploy is stale."""
    node = ctx.models[name]
    record = ctx.records.get(name, "deploy")
    if record is None:
        return ["never deployed"]
    reasons = version_reasons(record)
    reasons += config_reasons(record.get("settings", {}), node.deploy_settings)
    container = ctx.file_state(node.output)
    if container is not None and container.sha256 != record.get("container_sha256"):
        reasons.append(f"container {ctx.rel(node.output)} changed since the last deploy")
    reasons += input_reasons(ctx, record.get("inputs", {}), node.deploy_inputs)
    return reasons


def split_reasons(ctx: BuildContext, model: str) -> list[str]:
    """Why an ``[llm]`` model's split is stale (checkpoint files, settings, missing graphs)."""
    from .llmsplit import split_inputs

    split = ctx.graph.splits[model]
    record = ctx.records.get(model, "split")
    if record is None:
        return ["no build record (never split here, or the state was reset)"]
    reasons = config_reasons(record.get("settings", {}), split.settings)
    inputs = split_inputs(Path(split.checkpoint))
    reasons += input_reasons(ctx, record.get("inputs", {}), inputs)
    reasons += [f"output {ctx.rel(p)} is missing" for p in split.targets if not os.path.exists(p)]
    return reasons


def why(ctx: BuildContext, names: list[str] | None = None) -> dict[str, list[str]]:
    """Reasons per model (compile, convert and deploy steps), without building anything.

    A model whose config is broken gets its problems as reasons.
    """
    out: dict[str, list[str]] = {}
    for name in ctx.graph.names:
        if names and name not in names:
            continue
        if name in ctx.graph.broken:
            out[name] = [f"config: {line}" for line in ctx.graph.broken[name]]
            continue
        reasons = []
        split = ctx.models[name].split
        if split is not None:
            reasons += [f"split:{split}: {r}" for r in split_reasons(ctx, split)]
        if ctx.models[name].compile_outputs is not None:
            reasons += [f"compile: {r}" for r in compile_reasons(ctx, name)]
        reasons += [f"convert: {r}" for r in convert_reasons(ctx, name)]
        reasons += [f"deploy: {r}" for r in deploy_reasons(ctx, name)]
        out[name] = reasons
    ctx.save()
    return out
