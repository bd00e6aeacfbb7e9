"""doit task generators of a project: example, compile, convert, verify, deploy, orphans, smoke.

Up-to-date decisions: file contents through `FingerprintChecker`; settings, the ane_build version
and hand-edited outputs through values saved with each task; reasons from our build records. Task
logic lives in the action modules; ``dodo`` files only re-export the ``task_*`` functions of
`ane_build.dodo`. A failed step reaches doit as one line (`TaskFailed`), never as a repr.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from ..llm.spec import CONFIG_FILE
from .actions import convert_action, say, verify_action
from .compiling import compile_action, log_path, outputs_intact
from .context import context
from .deploying import deploy_action, deploy_record_path
from .layout import SMOKE_XML, SYNTHETIC_FILE, build_version
from .llmsplit import split_inputs
from .outcome import Step, StepFailed
from .reasons import output_changed
from .smoke import ALLOW_SIM_ENV, SMOKE_JSON, smoke_action
from .state import FileState

TaskDict = dict[str, Any]

# Output goes straight to the terminal, never through doit's capture: with ``-P thread`` each
# capture swaps the process-wide sys.stdout, and threads that read it mid-swap chain each other's
# writers into a cycle (infinite recursion, then a crash).
LIVE_OUTPUT: dict[str, Any] = {"verbosity": 2, "io": {"capture": False}}
Action = Callable[[str], Any]


def run_step(action: Action, name: str) -> Any:
    """Run an action; a failed step becomes doit's `TaskFailed` with its one-line reason."""
    result = action(name)
    return TaskFailed(result.message) if isinstance(result, StepFailed) else result


def _current(values: dict[str, Any], digest: str) -> bool:
    return values.get("settings") == digest and values.get("version") == build_version()


def _compile_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    # Not the ane_build version: an upgrade rebuilds containers, but the compiler is not ours.
    def check(task: Any, values: dict[str, Any]) -> bool:
        ctx = context()
        current = values.get("settings") == ctx.models[name].compile_digest
        return current and outputs_intact(ctx, name)

    check.__name__ = f"compile_settings_and_outputs({name})"
    return check


def _intact(path: str, saved: Any) -> bool:
    """Whether an output still holds what was saved (a stat, a digest when touched)."""
    state = FileState.from_json(saved)
    try:
        st = os.stat(path)
    except OSError:
        return False
    if state is None:
        return False
    if (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
        return True
    return output_changed(context(), path, saved) is None


def _convert_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        node = context().models[name]
        if not _current(values, node.convert_digest):
            return False
        copies = values.get("data", {})
        if {copy for _, copy in node.data_copies} != set(copies):
            return False
        outputs = {node.output: values.get("output"), **copies}
        return all(_intact(path, saved) for path, saved in outputs.items())

    check.__name__ = f"convert_settings_and_outputs({name})"
    return check


def _deploy_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        return _current(values, context().models[name].deploy_digest)

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
            "doc": f"generate {name}'s synthetic inputs (real ONNX; artefacts are not ANE code)",
            "actions": [(_generate_action, [name])],
            "file_dep": [os.fspath(ctx.root / SYNTHETIC_FILE)],
            "targets": [os.fspath(p) for p in outputs_of(name, model, ctx.root)],
            "clean": True,
            **LIVE_OUTPUT,
        }
    for name, checkpoint in spec.checkpoints.items() if spec else ():
        config = ctx.root / checkpoint.dir / CONFIG_FILE
        yield {
            "basename": "example",
            "name": name,
            "doc": f"write random weights for {ctx.rel(config)} (not a trained model)",
            "actions": [(_weights_action, [name])],
            "file_dep": [os.fspath(ctx.root / SYNTHETIC_FILE), os.fspath(config)],
            "targets": [os.fspath(checkpoint.weights(ctx.root))],
            "clean": True,
            **LIVE_OUTPUT,
        }


def _generate_action(name: str) -> None:
    from ..synthetic.example import generate_model, load_synthetic

    ctx = context()
    spec = load_synthetic(ctx.root)
    if spec is not None:
        for path in generate_model(name, spec.models[name], ctx.root):
            say(f"example:{name}: wrote {ctx.rel(path)} (synthetic example input)")


def _weights_action(name: str) -> None:
    from ..llm.random_weights import write_random_weights
    from ..synthetic.example import load_synthetic

    ctx = context()
    spec = load_synthetic(ctx.root)
    if spec is not None:
        checkpoint = spec.checkpoints[name]
        path = write_random_weights(
            ctx.root / checkpoint.dir, checkpoint.weights(ctx.root), checkpoint.seed
        )
        say(f"example:{name}: wrote {ctx.rel(path)} (random weights, not a trained model)")


def _generated_weights() -> dict[str, list[str]]:
    """Weights the example task writes, by the real path of their checkpoint folder.

    A split of one of those folders waits for them.
    """
    ctx = context()
    if not (ctx.root / SYNTHETIC_FILE).exists():
        return {}
    from ..synthetic.example import load_synthetic

    spec = load_synthetic(ctx.root)
    out: dict[str, list[str]] = {}
    for c in spec.checkpoints.values() if spec else ():
        folder = os.path.realpath(ctx.root / c.dir)
        out.setdefault(folder, []).append(os.fspath(c.weights(ctx.root)))
    return out


def gen_split() -> Iterator[TaskDict]:
    """Tasks: one ``split:<model>`` per ``[llm]`` model (its programs' graphs)."""
    from .splitting import split_action
    from .taskgraph import settings_digest

    ctx = context()
    yield {"basename": "split", "name": None, "doc": "split LLM checkpoints into chunk graphs"}
    generated = _generated_weights() if ctx.graph.splits else {}
    for name, split in ctx.graph.splits.items():
        digest = settings_digest(split.settings)
        waits = generated.get(os.path.realpath(split.checkpoint), [])
        yield {
            "basename": "split",
            "name": name,
            "doc": f"split {ctx.rel(split.checkpoint)} into {len(split.programs)} ANE programs",
            "actions": [(run_step, [split_action, name])],
            # The settings are checked by value: other edits of the config do not re-split.
            "file_dep": sorted({*split_inputs(Path(split.checkpoint)), *waits}),
            "targets": list(split.targets),
            "uptodate": [lambda task, values, digest=digest: values.get("settings") == digest],
            "clean": True,
            **LIVE_OUTPUT,
        }


def gen_compile() -> Iterator[TaskDict]:
    """Tasks: one ``compile:<model>`` per model with a ``[compile]`` step."""
    ctx = context()
    yield {"basename": "compile", "name": None, "doc": "run the compilers"}
    for name, node in ctx.models.items():
        if node.compile_outputs is None:
            continue
        yield {
            "basename": "compile",
            "name": name,
            "doc": f"compile {ctx.rel(node.source)} into {ctx.rel(node.compile_outputs)}",
            "actions": [(run_step, [compile_action, name])],
            "file_dep": list(node.compile_inputs),
            "targets": [node.manifest],
            "uptodate": [_compile_uptodate(name)],
            "clean": [(_clean_compile, [name])],
            **LIVE_OUTPUT,
        }


def _clean_compile(name: str) -> None:
    ctx = context()
    node = ctx.models[name]
    folder = node.compile_outputs or ""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
        say(f"compile:{name}: removed {ctx.rel(folder)}")
    for path in (node.manifest or "", os.fspath(log_path(ctx.root, name))):
        if os.path.exists(path):
            os.unlink(path)
    ctx.records.delete(name, "compile")


def gen_convert() -> Iterator[TaskDict]:
    """Tasks: one ``convert:<model>`` per config (a broken config's task reports it)."""
    ctx = context()
    yield {"basename": "convert", "name": None, "doc": "build _ane.onnx containers"}
    claimed: set[str] = set()
    for name in ctx.graph.names:
        node = ctx.models.get(name)
        if node is None:
            yield _broken_task(name)
            continue
        # A data file two models share is copied by both, but doit allows one task per target.
        copies = [copy for _, copy in node.data_copies if copy not in claimed]
        claimed.update(copies)
        yield {
            "basename": "convert",
            "name": name,
            "doc": f"embed {name}'s compiler artefacts into {ctx.rel(node.output)}",
            "actions": [(run_step, [convert_action, name])],
            "file_dep": list(node.inputs),
            "targets": [node.output, *copies],
            "uptodate": [_convert_uptodate(name)],
            "clean": True,
            **LIVE_OUTPUT,
        }


def _broken_task(name: str) -> TaskDict:
    return {
        "basename": "convert",
        "name": name,
        "doc": f"report the problems of configs/{name}.toml (its config is broken)",
        "actions": [(run_step, [config_action, name])],
        "uptodate": [False],
        **LIVE_OUTPUT,
    }


def config_action(name: str) -> StepFailed:
    """Doit action of a model whose config is broken: report every problem."""
    ctx = context()
    problems = ctx.graph.broken[name]
    return Step(ctx, "config", name).fail(problems[0], problems[1:])


def gen_verify() -> Iterator[TaskDict]:
    """Tasks: one ``verify:<model>`` per config."""
    ctx = context()
    yield {"basename": "verify", "name": None, "doc": "check containers against kernel rules"}
    for name, node in ctx.models.items():
        yield {
            "basename": "verify",
            "name": name,
            "doc": f"verify {ctx.rel(node.output)}",
            "actions": [(run_step, [verify_action, name])],
            "file_dep": [node.output],
            **LIVE_OUTPUT,
        }


def gen_deploy() -> Iterator[TaskDict]:
    """Tasks: one ``deploy:<model>`` per config."""
    ctx = context()
    yield {"basename": "deploy", "name": None, "doc": "submit containers and check their numbers"}
    for name, node in ctx.models.items():
        yield {
            "basename": "deploy",
            "name": name,
            "doc": f"submit {name} to {node.device} ({node.submit_mode} mode) and check it",
            "actions": [(run_step, [deploy_action, name])],
            "file_dep": [node.output, *node.deploy_inputs],
            "targets": [os.fspath(deploy_record_path(ctx.root, name))],
            "task_dep": [f"verify:{name}"],
            "uptodate": [_deploy_uptodate(name)],
            "clean": True,
            **LIVE_OUTPUT,
        }


def gen_orphans() -> TaskDict:
    """Task: nothing to run; ``doit clean`` removes the outputs of removed or renamed configs."""
    return {
        "basename": "orphans",
        "doc": "outputs of removed or renamed configs (doit clean removes them)",
        "actions": None,
        "clean": [_clean_orphans],
        "uptodate": [True],
    }


def _clean_orphans() -> None:
    from .orphans import remove_orphans

    ctx = context()
    for path in remove_orphans(ctx):
        say(f"orphans: removed {path} (its config is gone)")


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
        **LIVE_OUTPUT,
    }
