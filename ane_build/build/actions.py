"""The doit actions of a model: convert, verify, deploy, and the run's summary table.

Each action prints what it does and why, records what it built, and turns an `AneError` into a
failed task with one clear line. Task definitions live in `tasks`; this module must not import doit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import AneError
from .context import BuildContext, context
from .layout import DEPLOY_DIR
from .reasons import convert_reasons, deploy_reasons
from .state import FileState, read_json


def say(line: str) -> None:
    """Report one line of an action's progress.

    doit shows what an action writes to stdout (verbosity 2) in task order, so this is the
    action's report channel, not a log: it is printed whatever the logging configuration.
    """
    print(line, flush=True)


def convert_action(name: str) -> dict[str, Any] | bool:
    """Doit action: rebuild one model's container, printing why and what came out."""
    from ..convert import convert_model

    ctx = context()
    node = ctx.models[name]
    reasons = convert_reasons(ctx, name)
    if not reasons:
        kept = _keep_current_output(ctx, name)
        if kept is not None:
            return kept
    for reason in reasons or ["doit has no state for this task"]:
        say(f"convert:{name}: {reason}")
    snapshot: dict[str, FileState] = {}
    for path in node.inputs:
        state = ctx.file_state(path)
        if state is not None:
            snapshot[path] = state
    ctx.snapshots.update(snapshot)
    try:
        spec = ctx.project.models[name]
        result = convert_model(
            spec.source,
            spec.artifacts,
            output=spec.output,
            toolchain=spec.config.toolchain,
            base_dir=ctx.root,
            allow_outside=spec.config.allow_outside_root,
            progress=_Progress(f"convert:{name}"),
            known_digests={Path(p): state.sha256 for p, state in snapshot.items()},
        )
    except AneError as exc:
        say(f"convert:{name}: error: {exc}")
        return False
    changed = _changed_during_build(snapshot)
    if changed:
        # The container took these digests from the snapshot; its bytes may not match them.
        for path in changed:
            say(f"convert:{name}: error: {ctx.rel(path)} changed during the build; run again")
        return False
    output = ctx.file_state(node.output)
    output_json = output.to_json() if output else None
    ctx.records.put(
        name,
        "convert",
        {
            "inputs": {p: s.to_json() for p, s in snapshot.items()},
            "config": node.convert_settings,
            "output": output_json,
            "finished": time.time(),
        },
    )
    ctx.save()
    ctx.built["convert"].append(name)
    for line in result.summary():
        say(f"convert:{name}: {line}")
    return {"settings": node.convert_digest, "output": output_json}


def _keep_current_output(ctx: BuildContext, name: str) -> dict[str, Any] | None:
    """The task values of an output our build record shows current; None to rebuild it.

    doit runs a convert task it has no state for. That happens when a run was killed after the
    action wrote the container and its record but before doit committed its own state, or when
    doit's state file was removed. The container then already holds exactly what a rebuild would
    write; rewriting it would only cost time and make ``why`` and doit disagree.
    """
    node = ctx.models[name]
    record = ctx.records.get(name, "convert")
    saved = FileState.from_json(record.get("output")) if record else None
    output = ctx.file_state(node.output)
    if saved is None or output is None or saved.sha256 != output.sha256:
        return None
    for path in node.inputs:
        state = ctx.file_state(path)
        if state is not None:
            ctx.snapshots[path] = state
    say(
        f"convert:{name}: {ctx.rel(node.output)} is up to date per its build record; kept "
        "(doit had no state for this task)"
    )
    return {"settings": node.convert_digest, "output": output.to_json()}


def _changed_during_build(snapshot: dict[str, FileState]) -> list[str]:
    """Inputs whose size or mtime moved since the snapshot the action started from."""
    changed = []
    for path, before in snapshot.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (before.size, before.mtime_ns):
            changed.append(path)
    return changed


class _Progress:
    """Byte progress for long conversions: a line every 10% of large outputs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.next_pct = 10
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < (256 << 20):
            return
        pct = 100 * done // total
        if pct >= self.next_pct:
            rate = done / max(time.monotonic() - self.start, 1e-6) / (1 << 20)
            say(f"{self.label}: {pct}% of {total >> 20} MiB ({rate:.0f} MiB/s)")
            self.next_pct = pct // 10 * 10 + 10


def verify_action(name: str) -> bool:
    """Doit action: verify one container; print the failures."""
    from ..container import verify_container

    ctx = context()
    report = verify_container(ctx.models[name].output)
    if report.ok:
        say(f"verify:{name}: {len(report.checks)} checks passed")
        return True
    say(f"verify:{name}: FAILED\n{report.summary()}")
    return False


def deploy_action(name: str) -> dict[str, Any] | bool:
    """Doit action: verify and submit one container, write its JSON record."""
    from ..deploy import deploy_container
    from ..driver.device import open_device

    ctx = context()
    node = ctx.models[name]
    for reason in deploy_reasons(ctx, name) or ["container changed"]:
        say(f"deploy:{name}: {reason}")
    container = ctx.file_state(node.output)
    try:
        with open_device(node.device) as device:
            if device.is_simulated and node.device == "auto":
                say(f"deploy:{name}: no ANE hardware found; using the simulator")
            record = deploy_container(
                name,
                Path(node.output),
                device=device,
                mode="direct" if node.submit_mode == "direct" else "onnx",
                record=ctx.root / DEPLOY_DIR / f"{name}.json",
            )
    except AneError as exc:
        say(f"deploy:{name}: error: {exc}")
        return False
    ctx.records.put(
        name,
        "deploy",
        {
            "settings": node.deploy_settings,
            "container_sha256": container.sha256 if container else None,
        },
    )
    ctx.built["deploy"].append(name)
    say(f"deploy:{name}: {record.summary}")
    return {"settings": node.deploy_digest}


def summary_action() -> None:
    """Doit action: a table of the models this run built or deployed, and a count of the rest."""
    ctx = context()
    touched = sorted(set(ctx.built["convert"]) | set(ctx.built["deploy"]))
    if not touched:
        say(f"summary: all {len(ctx.models)} model(s) up to date")
        return
    rows = [("model", "container", "size", "td", "deployed to", "submit")]
    simulated = False
    for name in touched:
        node = ctx.models[name]
        deploy = read_json(ctx.root / DEPLOY_DIR / f"{name}.json") or {}
        size = os.path.getsize(node.output) if os.path.exists(node.output) else 0
        where = "simulator" if deploy.get("simulated") else deploy.get("device", "-")
        simulated |= bool(deploy.get("simulated"))
        td = f"{deploy['td_count']} x 0x{deploy['td_size']:x}" if deploy else "-"
        submit = f"{deploy['submit_ms']:.2f} ms" if deploy else "-"
        rows.append((name, ctx.rel(node.output), f"{size:,}", td, where, submit))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            say("  ".join("-" * w for w in widths))
    rest = len(ctx.models) - len(touched)
    say(f"{len(touched)} model(s) built or deployed, {rest} already up to date")
    if simulated:
        say("(simulator: submissions were validated, not run on ANE hardware)")
