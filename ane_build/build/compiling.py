"""The compile action of a model, its manifest, and whether its output folder is still intact.

The manifest (``.ane_build/compiled/<model>.json``) lists every file the compiler wrote with its
digest; it is the compile task's target and a convert input, and is rewritten only when its
content changes, so a compiler run that writes the same bytes again rebuilds nothing after it.
This module must not import doit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .._fs import write_atomic
from ..errors import AneError
from .actions import changed_during_build, snapshot
from .compiler import run_compiler
from .context import BuildContext, context
from .layout import LOGS_DIR, build_version
from .outcome import KEPT, Step, StepFailed
from .reasons import compile_reasons, folder_files
from .state import FileState, read_json

__all__ = ["compile_action", "log_path", "outputs_intact"]


def log_path(root: Path, name: str) -> Path:
    """Where the compiler's stdout and stderr of ``name`` go."""
    return root / LOGS_DIR / f"{name}.compile.log"


def compile_action(name: str) -> dict[str, Any] | StepFailed:
    """Doit action: run one model's compiler and swap its output in."""
    ctx = context()
    node = ctx.models[name]
    step = Step(ctx, "compile", name)
    reasons = compile_reasons(ctx, name)
    if not reasons and not ctx.forced and Path(node.manifest or "").exists():
        step.say(f"{ctx.rel(node.compile_outputs or '')} is up to date per its build record; kept")
        step.done(KEPT)
        return _values(ctx, name)
    step.because(reasons or ["rebuilt although up to date (doit -a, or doit had no state)"])
    if node.compile_missing:
        missing = ", ".join(ctx.rel(p) for p in node.compile_missing)
        return step.fail(f"compile input(s) missing: {missing}")
    states = snapshot(ctx, node.compile_inputs)
    spec = ctx.project.models[name].compile
    assert spec is not None, name  # the graph has compile fields only for such models
    log = log_path(ctx.root, name)
    try:
        run = run_compiler(spec, name, ctx.root, Path(node.source), log)
    except AneError as exc:
        return step.fail(exc)
    changed = changed_during_build(states)
    if changed:
        shown = ", ".join(ctx.rel(p) for p in changed)
        return step.fail(f"{shown} changed while the compiler ran; run again")
    outputs = _record(ctx, name, states, run.argv, run.seconds)
    step.say(
        f"compiled {len(outputs)} file(s) into {ctx.rel(node.compile_outputs or '')} in "
        f"{run.seconds:.2f} s (log {ctx.rel(log)})"
    )
    step.done(compiler_seconds=round(run.seconds, 4))
    return _values(ctx, name)


def _record(
    ctx: BuildContext, name: str, states: dict[str, FileState], argv: list[str], seconds: float
) -> dict[str, FileState]:
    """Write the build record and (when its content changed) the manifest."""
    node = ctx.models[name]
    folder = Path(node.compile_outputs or "")
    outputs: dict[str, FileState] = {}
    for rel, path in folder_files(folder).items():
        state = ctx.file_state(path)
        if state is not None:
            outputs[rel] = state
    manifest = Path(node.manifest or "")
    body = {
        "outputs": ctx.rel(folder),
        "files": {rel: state.sha256 for rel, state in sorted(outputs.items())},
    }
    if read_json(manifest) != body:
        write_atomic(manifest, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    ctx.records.put(
        name,
        "compile",
        {
            "version": build_version(),
            "settings": node.compile_settings,
            "inputs": {p: s.to_json() for p, s in states.items()},
            "outputs": {rel: s.to_json() for rel, s in outputs.items()},
            "outputs_folder": node.compile_outputs,
            "argv": argv,
            "seconds": round(seconds, 4),
            "finished": time.time(),
        },
    )
    ctx.save()
    return outputs


def _values(ctx: BuildContext, name: str) -> dict[str, Any]:
    return {"settings": ctx.models[name].compile_digest, "version": build_version()}


def outputs_intact(ctx: BuildContext, name: str) -> bool:
    """Whether the compile folder holds exactly the files the last compile wrote.

    Stat calls only while fingerprints are unchanged (then the digest cache answers).
    """
    node = ctx.models[name]
    record = ctx.records.get(name, "compile")
    if record is None or node.compile_outputs is None:
        return False
    saved = record.get("outputs", {})
    current = folder_files(Path(node.compile_outputs))
    if current.keys() != saved.keys():
        return False
    for rel, path in current.items():
        old = FileState.from_json(saved[rel])
        if old is None:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) == (old.size, old.mtime_ns):
            continue
        state = ctx.file_state(path)
        if state is None or state.sha256 != old.sha256:
            return False
    return True
