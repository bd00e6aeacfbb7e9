"""doit tasks of an ane_build project: a project's ``dodo.py`` is ``from ane_build.dodo import *``.

Thin on purpose: each task generator defers to `ane_build.build.tasks`. Loading the project
(configs) happens when doit asks for tasks, never on import; so does taking the build lock.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from doit import create_after, task_params
from doit.exceptions import InvalidDodoFile

from ..errors import AneError
from . import tasks
from .checker import FingerprintChecker
from .context import BuildContext, context
from .layout import DOIT_DB, STATE_DIR
from .reporter import DEFAULT_TASKS, BuildReporter
from .state import hold_project_lock

DOIT_CONFIG: dict[str, Any] = {
    "default_tasks": list(DEFAULT_TASKS),
    "dep_file": f"{STATE_DIR}/{DOIT_DB}",
    "backend": "ane-sqlite",
    "check_file_uptodate": FingerprintChecker,
    "action_string_formatting": "new",
    # Keep going: a failing model does not stop the others; the summary lists every failure.
    "continue": True,
    "reporter": BuildReporter,
}


_F = TypeVar("_F", bound=Callable[..., Any])


def _after(task: str) -> Callable[[_F], _F]:
    """Typed `doit.create_after`: create the decorated tasks once ``task`` has run."""
    decorate: Callable[[_F], _F] = create_after(executed=task)
    return decorate


def _params(options: list[dict[str, Any]]) -> Callable[[_F], _F]:
    """Typed `doit.task_params`: command-line options a (delayed) task creator receives."""
    decorate: Callable[[_F], _F] = task_params(options)
    return decorate


_previous_hook = sys.excepthook


def _interrupt_hook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """Report Ctrl-C during a doit run in one line instead of doit's traceback.

    doit lets KeyboardInterrupt reach the interpreter, which prints the whole stack. Installed
    when doit loads our tasks (never on import); the process still ends by SIGINT, so a shell
    sees status 130.
    """
    if issubclass(kind, KeyboardInterrupt):
        print("doit: interrupted", file=sys.stderr)
        return
    _previous_hook(kind, exc, tb)


def _context() -> BuildContext:
    try:
        ctx = context()
    except AneError as exc:
        raise InvalidDodoFile(str(exc)) from exc
    sys.excepthook = _interrupt_hook
    try:
        hold_project_lock(ctx.root)
    except KeyboardInterrupt:
        # doit would print the traceback of an interrupted task loader; one line is enough.
        print("doit: interrupted while waiting for the build lock", file=sys.stderr)
        raise SystemExit(130) from None
    return ctx


def _graph() -> BuildContext:
    ctx = _context()
    try:
        ctx.graph  # noqa: B018 - loads and validates every config, reported as doit's error
    except AneError as exc:
        raise InvalidDodoFile(str(exc)) from exc
    return ctx


# Every task is created up front from one task graph (no task is created after another ran:
# with keep-going, a failed step would otherwise stop every later step of every model). Steps
# are ordered by their files: a step's output is the next one's file dependency.


def task_example() -> Iterator[dict[str, Any]]:
    """Generate synthetic example inputs (only in projects with a synthetic.toml)."""
    _context()
    yield from tasks.gen_example()


def task_split() -> Iterator[dict[str, Any]]:
    """Split each [llm] model's checkpoint into chunk graphs (one program each)."""
    _graph()
    yield from tasks.gen_split()


def task_compile() -> Iterator[dict[str, Any]]:
    """Run each model's compiler (models with a [compile] table)."""
    _graph()
    yield from tasks.gen_compile()


def task_convert() -> Iterator[dict[str, Any]]:
    """Build _ane.onnx containers from compiler artefacts."""
    _graph()
    yield from tasks.gen_convert()


def task_verify() -> Iterator[dict[str, Any]]:
    """Check every container against the kernel's rules."""
    _graph()
    yield from tasks.gen_verify()


def task_deploy() -> Iterator[dict[str, Any]]:
    """Submit every container (hardware, else the simulator) and check its numbers."""
    _graph()
    yield from tasks.gen_deploy()


def task_orphans() -> dict[str, Any]:
    """Outputs of removed or renamed configs (``doit clean`` removes them)."""
    _graph()
    return tasks.gen_orphans()


@_after("verify")
@_params(tasks.SMOKE_PARAMS)
def task_smoke(shard: str, repeat: int) -> dict[str, Any]:
    """CI smoke test on real ANE hardware (--shard K/N, --repeat N)."""
    _graph()
    return tasks.gen_smoke(shard=shard, repeat=repeat)


__all__ = [
    "DOIT_CONFIG",
    "task_compile",
    "task_convert",
    "task_deploy",
    "task_example",
    "task_orphans",
    "task_smoke",
    "task_split",
    "task_verify",
]
