"""The convert and verify actions of a model (compile and deploy have their own modules).

Each action prints what it does and why, records what it built, and turns an `AneError` into a
failed step with one clear line. Task definitions live in `tasks`; this module must not import
doit.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO

from .._fs import replace_atomically
from ..errors import AneError
from .context import BuildContext, context
from .layout import build_version
from .outcome import KEPT, Step, StepFailed, say
from .reasons import convert_reasons
from .state import FileState

__all__ = ["convert_action", "forced_reason", "say", "snapshot", "verify_action"]


def snapshot(ctx: BuildContext, paths: tuple[str, ...]) -> dict[str, FileState]:
    """The current state of each existing input, remembered for doit's state (see checker)."""
    states: dict[str, FileState] = {}
    for path in paths:
        state = ctx.file_state(path)
        if state is not None:
            states[path] = state
    ctx.snapshots.update(states)
    return states


def changed_during_build(states: dict[str, FileState]) -> list[str]:
    """Inputs whose size or mtime moved since the snapshot the action started from."""
    changed = []
    for path, before in states.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (before.size, before.mtime_ns):
            changed.append(path)
    return changed


def convert_action(name: str) -> dict[str, Any] | StepFailed:
    """Doit action: rebuild one model's container, printing why and what came out."""
    from ..convert import convert_model

    ctx = context()
    node = ctx.models[name]
    step = Step(ctx, "convert", name)
    reasons = convert_reasons(ctx, name)
    if not reasons and not ctx.forced:
        kept = _keep_current_output(ctx, step)
        if kept is not None:
            return kept
    step.because(reasons or [forced_reason(ctx)])
    states = snapshot(ctx, node.inputs)
    try:
        copies = _copy_external_data(ctx, node.data_copies)
        spec = ctx.project.models[name]
        result = convert_model(
            spec.source,
            spec.artifacts,
            output=spec.output,
            toolchain=spec.config.toolchain,
            base_dir=ctx.root,
            allow_outside=spec.config.allow_outside_root,
            progress=_Progress(step),
            known_digests={Path(p): state.sha256 for p, state in states.items()},
        )
    except AneError as exc:
        return step.fail(exc)
    changed = changed_during_build(states)
    if changed:
        # The container took these digests from the snapshot; its bytes may not match them.
        shown = ", ".join(ctx.rel(p) for p in changed)
        return step.fail(f"{shown} changed during the build; run again")
    output = ctx.file_state(node.output)
    output_json = output.to_json() if output else None
    compiled = ctx.records.get(name, "compile") or {}
    ctx.records.put(
        name,
        "convert",
        {
            "version": build_version(),
            "inputs": {p: s.to_json() for p, s in states.items()},
            "config": node.convert_settings,
            "output": output_json,
            "output_path": node.output,
            "data": {path: state.to_json() for path, state in copies.items()},
            "compiled": compiled.get("outputs", {}) if node.manifest else {},
            "finished": time.time(),
        },
    )
    ctx.save()
    for line in result.summary():
        step.say(line)
    step.done()
    return _values(ctx, name, output_json, {p: s.to_json() for p, s in copies.items()})


def _values(ctx: BuildContext, name: str, output: Any, data: dict[str, Any]) -> dict[str, Any]:
    """What doit keeps of a convert for its up-to-date check: settings, version, outputs."""
    return {
        "settings": ctx.models[name].convert_digest,
        "version": build_version(),
        "output": output,
        "data": data,
    }


def forced_reason(ctx: BuildContext) -> str:
    """Why a step with no stale input runs: ``doit -a``, or doit lost its state."""
    if ctx.forced:
        return "rebuilt although up to date (doit -a)"
    return "doit has no state for this task (doit forget, or its state was reset)"


def _keep_current_output(ctx: BuildContext, step: Step) -> dict[str, Any] | None:
    """The task values of an output our build record shows current; None to rebuild it.

    doit runs a convert task it has no state for. That happens when a run was killed after the
    action wrote the container and its record but before doit committed its own state. The
    container then already holds exactly what a rebuild would write; rewriting it would only
    cost time and make ``why`` and doit disagree. (``doit forget`` removes our record too, and
    ``doit -a`` sets `BuildContext.forced`, so both do rebuild.)
    """
    node = ctx.models[step.name]
    record = ctx.records.get(step.name, "convert")
    saved = FileState.from_json(record.get("output")) if record else None
    output = ctx.file_state(node.output)
    if saved is None or output is None or saved.sha256 != output.sha256:
        return None
    snapshot(ctx, node.inputs)
    step.say(
        f"{ctx.rel(node.output)} is up to date per its build record; kept "
        "(doit had no state for this task)"
    )
    step.done(KEPT)
    data = {copy: s.to_json() for _, copy in node.data_copies if (s := ctx.file_state(copy))}
    return _values(ctx, step.name, output.to_json(), data)


def _copy_external_data(
    ctx: BuildContext, copies: tuple[tuple[str, str], ...]
) -> dict[str, FileState]:
    """Copy the source's external data files next to the output, where the container reads them.

    Copied, never linked: onnx refuses external data reached through a symbolic or hard link.
    A copy whose content already matches is left alone.

    Raises:
        FileAccessError: A copy cannot be written.
    """
    states: dict[str, FileState] = {}
    for data, copy in copies:
        want, have = ctx.file_state(data), ctx.file_state(copy)
        if want is not None and (have is None or have.sha256 != want.sha256):
            Path(copy).parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(Path(copy), functools.partial(_copy_into, data))
            say(f"copied external data {ctx.rel(data)} -> {ctx.rel(copy)}")
            have = ctx.file_state(copy)
        if have is not None:
            states[copy] = have
    return states


def _copy_into(source: str, out: BinaryIO, _tmp: str) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, out, 4 << 20)


class _Progress:
    """Byte progress for long conversions: a line every 10% of large outputs."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.next_pct = 10
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < (256 << 20):
            return
        pct = 100 * done // total
        if pct >= self.next_pct:
            rate = done / max(time.monotonic() - self.start, 1e-6) / (1 << 20)
            self.step.say(f"{pct}% of {total >> 20} MiB ({rate:.0f} MiB/s)")
            self.next_pct = pct // 10 * 10 + 10


def verify_action(name: str) -> bool | StepFailed:
    """Doit action: verify one container; print the failures."""
    from ..container import verify_container

    ctx = context()
    step = Step(ctx, "verify", name)
    try:
        report = verify_container(ctx.models[name].output)
    except AneError as exc:
        return step.fail(exc)
    if report.ok:
        step.say(f"{len(report.checks)} checks passed")
        step.done()
        return True
    first = report.failures[0] if report.failures else None
    reason = f"{first.name}: {first.detail}" if first else "no check could be evaluated"
    return step.fail(f"verification failed: {reason}", report.summary().splitlines())
