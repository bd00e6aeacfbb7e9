"""doit tasks of an ane_build project: a project's ``dodo.py`` is ``from ane_build.dodo import *``.

Thin on purpose: each task generator defers to `ane_build.tasks`. Loading the project (configs)
happens when doit asks for tasks, never on import; so does taking the project's build lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from doit.exceptions import InvalidDodoFile

from . import tasks
from .buildstate import hold_project_lock
from .errors import AneError

DOIT_CONFIG: dict[str, Any] = {
    "default_tasks": ["example", "convert", "verify", "deploy", "summary"],
    "dep_file": ".ane_build/doit.sqlite",
    "backend": "ane-sqlite",
    "check_file_uptodate": tasks.FingerprintChecker,
    "action_string_formatting": "new",
}


def _context() -> tasks.BuildContext:
    try:
        ctx = tasks.context()
    except AneError as exc:
        raise InvalidDodoFile(str(exc)) from exc
    hold_project_lock(ctx.root)
    return ctx


def task_example() -> Iterator[dict[str, Any]]:
    """Generate synthetic example inputs (only in projects with a synthetic.toml)."""
    _context()
    yield from tasks.gen_example()


def task_convert() -> Iterator[dict[str, Any]]:
    """Build _ane.onnx containers from compiler artefacts."""
    _context()
    yield from tasks.gen_convert()


def task_verify() -> Iterator[dict[str, Any]]:
    """Check every container against the kernel's rules."""
    _context()
    yield from tasks.gen_verify()


def task_deploy() -> Iterator[dict[str, Any]]:
    """Verify and submit every container (hardware, else the simulator)."""
    _context()
    yield from tasks.gen_deploy()


def task_summary() -> dict[str, Any]:
    """Print a table of containers and deploys."""
    _context()
    return tasks.gen_summary()


def task_smoke() -> dict[str, Any]:
    """CI smoke test on real ANE hardware."""
    _context()
    return tasks.gen_smoke()


__all__ = [
    "DOIT_CONFIG",
    "task_convert",
    "task_deploy",
    "task_example",
    "task_smoke",
    "task_summary",
    "task_verify",
]
