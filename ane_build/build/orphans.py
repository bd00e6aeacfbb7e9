"""Outputs nothing builds any more: those of removed or renamed configs, and moved outputs.

Found from the build records (each says what its step wrote), so they can be reported by ``why``
and removed by ``doit clean``. Only files the records name are ever removed. This module must not
import doit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from .compiling import log_path
from .context import BuildContext
from .deploying import deploy_record_path
from .taskgraph import manifest_path

__all__ = ["find_orphans", "remove_orphans"]


def _written_by(ctx: BuildContext, name: str) -> list[Path]:
    """What the recorded steps of ``name`` wrote, as their records say."""
    paths: list[Path] = []
    compiled = ctx.records.get(name, "compile")
    if compiled is not None:
        if compiled.get("outputs_folder"):
            paths.append(Path(compiled["outputs_folder"]))
        paths += [manifest_path(ctx.root, name), log_path(ctx.root, name)]
    converted = ctx.records.get(name, "convert")
    if converted is not None:
        if converted.get("output_path"):
            paths.append(Path(converted["output_path"]))
        paths += [Path(p) for p in converted.get("data", {})]
    if ctx.records.get(name, "deploy") is not None:
        paths.append(deploy_record_path(ctx.root, name))
    split = ctx.records.get(name, "split")
    if split is not None and split.get("output"):
        paths.append(Path(split["output"]))
    return paths


def _current_outputs(ctx: BuildContext) -> set[Path]:
    outputs: set[Path] = set()
    outputs.update(Path(split.output) for split in ctx.graph.splits.values())
    for name, node in ctx.models.items():
        outputs.add(Path(node.output))
        outputs.update(Path(copy) for _, copy in node.data_copies)
        if node.compile_outputs is not None:
            outputs |= {Path(node.compile_outputs), manifest_path(ctx.root, name)}
            outputs.add(log_path(ctx.root, name))
        outputs.add(deploy_record_path(ctx.root, name))
    return outputs


def _read_now(ctx: BuildContext) -> list[Path]:
    """Everything a model reads now: never an orphan, nor a folder holding one of them."""
    paths: list[Path] = []
    for node in ctx.models.values():
        for group in (node.inputs, node.roots, node.compile_inputs, node.deploy_inputs):
            paths += [Path(p) for p in group]
    return paths


def find_orphans(ctx: BuildContext) -> dict[str, list[Path]]:
    """Model name -> existing files and folders its records name that no model builds now.

    A model whose config is gone has all its outputs listed; a model still configured only
    those it no longer writes (an output path that changed, a compile step removed). Nothing
    a model reads now is listed.
    """
    current = _current_outputs(ctx)
    read = _read_now(ctx)
    known = {*ctx.graph.names, *ctx.graph.splits}
    found: dict[str, list[Path]] = {}
    for name in sorted({model for model, _ in ctx.records.entries()}):
        if name in ctx.graph.broken:
            continue  # a config being fixed: its outputs are still the last good ones
        paths = [
            p
            for p in dict.fromkeys(_written_by(ctx, name))
            if p not in current and not any(r.is_relative_to(p) for r in read)
        ]
        existing = [p for p in paths if os.path.lexists(p)]
        if existing or name not in known:
            found[name] = existing
    return found


def remove_orphans(ctx: BuildContext) -> list[str]:
    """Remove every orphan output, and the records of models whose config is gone.

    Returns:
        What was removed, relative to the project root.
    """
    known = {*ctx.graph.names, *ctx.graph.splits}
    removed = []
    for name, paths in find_orphans(ctx).items():
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(ctx.rel(path))
        if name not in known:
            ctx.records.delete(name)
            ctx.outcomes.delete(name)
    return removed
