"""The no-op fast path: a complete, clean build leaves a stamp; an unchanged project skips doit.

After a run of the default tasks that failed nowhere and during which no input changed, the
stamp (``.ane_build/noop.json``) records the fingerprint (inode, size, mtime, ctime) of every
file and folder the build's up-to-date checks look at: configs, dodo.py, every input and output,
every folder a walk or glob listed (inputs as they were when the run began). When each is
unchanged (``stat`` calls only) and the ane_build version is the same, nothing can be out of
date, and ``doit`` reports so without loading its task definitions. Any change to doit's state
(a run that saved something, ``doit forget``, ``doit ignore``) removes the stamp. This module
must not import doit.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from .._fs import write_atomic
from .layout import DODO_FILE, NOOP_FILE, STATE_DIR, build_version
from .llmsplit import split_inputs
from .state import fingerprint, read_json
from .taskgraph import TaskGraph, manifest_path

__all__ = ["begin", "check_stamp", "invalidate", "stamp_path", "write_stamp"]

_STAMP_VERSION = 1


def stamp_path(root: Path) -> Path:
    """Where a project's no-op stamp lives."""
    return root / STATE_DIR / NOOP_FILE


def _inputs(graph: TaskGraph) -> list[str]:
    """What the build reads: configs and walked folders, dodo.py, every input file."""
    paths = [os.fspath(graph.root / DODO_FILE), *graph.watched]
    for node in graph.models.values():
        inputs = [p for p in node.inputs if p != node.manifest]
        paths += [*inputs, *node.compile_inputs, *node.deploy_inputs]
    for split in graph.splits.values():
        paths += [*split_inputs(Path(split.checkpoint)), *split.targets]
    return list(dict.fromkeys(paths))


def _outputs(graph: TaskGraph) -> list[str]:
    """What the build writes (and later steps read): every output, manifest and record."""
    from .compiling import log_path
    from .deploying import deploy_record_path

    paths: list[str] = []
    for name, node in graph.models.items():
        paths += [node.output, *(copy for _, copy in node.data_copies)]
        paths.append(os.fspath(deploy_record_path(graph.root, name)))
        if node.compile_outputs is not None:
            paths += [os.fspath(manifest_path(graph.root, name)), node.compile_outputs]
            paths.append(os.fspath(log_path(graph.root, name)))
            for folder, _, names in os.walk(node.compile_outputs):
                paths.append(folder)
                paths += [os.path.join(folder, n) for n in names]
    return paths


def _print(path: str) -> list[int] | None:
    try:
        return fingerprint(os.stat(path))
    except OSError:
        return None


def begin(graph: TaskGraph) -> dict[str, list[int] | None]:
    """The inputs' fingerprints before a run's first task (see `write_stamp`)."""
    return {path: _print(path) for path in _inputs(graph)}


def write_stamp(graph: TaskGraph, inputs: dict[str, list[int] | None]) -> bool:
    """Record that every model of ``graph`` is up to date; False when that cannot be known.

    Args:
        graph: The graph the run built.
        inputs: `begin`'s fingerprints. Only when no input changed while the run ran (and
            nothing the graph was made from) did the build see what the stamp would describe.
    """
    if graph.broken or not graph.unchanged():
        return False  # a broken config fails every run: never a no-op
    if begin(graph) != inputs:
        return False
    files = {**inputs, **{path: _print(path) for path in _outputs(graph)}}
    body = {
        "version": _STAMP_VERSION,
        "ane_build": build_version(),
        "models": len(graph.models),
        "files": files,
    }
    write_atomic(stamp_path(graph.root), json.dumps(body, separators=(",", ":")).encode())
    return True


def check_stamp(root: Path) -> int | None:
    """The number of models when nothing changed since the stamp was written, else None."""
    data: Any = read_json(stamp_path(root))
    if not isinstance(data, dict) or data.get("version") != _STAMP_VERSION:
        return None
    if data.get("ane_build") != build_version():
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not isinstance(data.get("models"), int):
        return None
    for path, saved in files.items():
        if _print(path) != saved:
            return None
    return int(data["models"])


def invalidate(root: Path) -> None:
    """Remove the stamp: the next run checks everything."""
    with contextlib.suppress(FileNotFoundError):
        stamp_path(root).unlink()
