"""doit task generators of a project: example, convert, verify, deploy, summary and smoke.

Up-to-date decisions: file contents through `FingerprintChecker`; settings and hand-edited outputs
through values saved with each task; reasons from our build records. Task logic lives in
`actions` and `smoke`; ``dodo`` files only re-export the ``task_*`` functions of `ane_build.dodo`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from .actions import convert_action, deploy_action, say, summary_action, verify_action
from .context import context
from .layout import DEPLOY_DIR, SMOKE_XML, SYNTHETIC_FILE
from .reasons import output_changed
from .smoke import ALLOW_SIM_ENV, SMOKE_JSON, smoke_action
from .state import FileState

TaskDict = dict[str, Any]


def _convert_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        ctx = context()
        node = ctx.models[name]
        if values.get("settings") != node.convert_digest:
            return False
        saved = values.get("output")
        try:
            st = os.stat(node.output)
        except OSError:
            return False
        state = FileState.from_json(saved)
        if state is None:
            return False
        if (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
            return True
        return output_changed(ctx, node.output, saved) is None

    check.__name__ = f"convert_settings_and_output({name})"
    return check


def _deploy_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        return bool(values.get("settings") == context().models[name].deploy_digest)

    check.__name__ = f"deploy_settings({name})"
    return check


def gen_example() -> Iterator[TaskDict]:
    """Tasks: generate the synthetic inputs listed in ``synthetic.toml`` (none without it)."""
    ctx = context()
    yield {"basename": "example", "name": None, "doc": "generate synthetic example inputs"}
    if not (ctx.root / SYNTHETIC_FILE).exists():
        return
    from ..synthetic.example import load_synthetic, outputs_of

    spec = load_synthetic(ctx.root)
    for name, model in spec.models.items() if spec else ():
        yield {
            "basename": "example",
            "name": name,
            "doc": f"generate {name}'s synthetic source and compiler output (not real ANE code)",
            "actions": [(_generate_action, [name])],
            "file_dep": [os.fspath(ctx.root / SYNTHETIC_FILE)],
            "targets": [os.fspath(p) for p in outputs_of(name, model, ctx.root)],
            "clean": True,
            "verbosity": 2,
        }


def _generate_action(name: str) -> None:
    from ..synthetic.example import generate_model, load_synthetic

    ctx = context()
    spec = load_synthetic(ctx.root)
    if spec is not None:
        for path in generate_model(name, spec.models[name], ctx.root):
            say(f"example:{name}: wrote {ctx.rel(path)} (synthetic example input)")


def gen_convert() -> Iterator[TaskDict]:
    """Tasks: one ``convert:<model>`` per config."""
    ctx = context()
    yield {"basename": "convert", "name": None, "doc": "build _ane.onnx containers"}
    for name, node in ctx.models.items():
        yield {
            "basename": "convert",
            "name": name,
            "doc": f"embed {name}'s compiler artefacts into {ctx.rel(node.output)}",
            "actions": [(convert_action, [name])],
            "file_dep": list(node.inputs),
            "targets": [node.output],
            "uptodate": [_convert_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_verify() -> Iterator[TaskDict]:
    """Tasks: one ``verify:<model>`` per config."""
    ctx = context()
    yield {"basename": "verify", "name": None, "doc": "check containers against kernel rules"}
    for name, node in ctx.models.items():
        yield {
            "basename": "verify",
            "name": name,
            "doc": f"verify {ctx.rel(node.output)}",
            "actions": [(verify_action, [name])],
            "file_dep": [node.output],
            "verbosity": 2,
        }


def gen_deploy() -> Iterator[TaskDict]:
    """Tasks: one ``deploy:<model>`` per config."""
    ctx = context()
    yield {"basename": "deploy", "name": None, "doc": "verify and submit containers"}
    for name, node in ctx.models.items():
        yield {
            "basename": "deploy",
            "name": name,
            "doc": f"submit {name} to {node.device} ({node.submit_mode} mode)",
            "actions": [(deploy_action, [name])],
            "file_dep": [node.output],
            "targets": [os.fspath(ctx.root / DEPLOY_DIR / f"{name}.json")],
            "task_dep": [f"verify:{name}"],
            "uptodate": [_deploy_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_summary() -> TaskDict:
    """Task: print what this run built and deployed."""
    return {
        "basename": "summary",
        "doc": "print a table of the containers built and deployed by this run",
        "actions": [summary_action],
        "task_dep": ["deploy"],
        "uptodate": [False],
        "verbosity": 2,
    }


# Options of ``doit smoke`` (doit's task-parameter format; `ane_build.dodo` declares them).
SMOKE_PARAMS: list[dict[str, Any]] = [
    {
        "name": "shard",
        "long": "shard",
        "type": str,
        "default": "",
        "help": "K/N: run only shard K of N (cases split by a hash of their name)",
    },
    {
        "name": "repeat",
        "long": "repeat",
        "type": int,
        "default": 0,
        "help": "N: time N more runs of every checked case (latency min/median/p99)",
    },
]


def gen_smoke(shard: str = "", repeat: int = 0) -> TaskDict:
    """Task: CI smoke run on a real device: check every model and the ANE_SAMPLES_DIR samples."""
    ctx = context()
    return {
        "basename": "smoke",
        "doc": f"check every model on real ANE hardware (simulator only with {ALLOW_SIM_ENV}=1)",
        "actions": [(smoke_action, [], {"shard": shard, "repeat": repeat})],
        "task_dep": ["verify"],
        "targets": [os.fspath(ctx.root / SMOKE_XML), os.fspath(ctx.root / SMOKE_JSON)],
        "uptodate": [False],
        "verbosity": 2,
    }
