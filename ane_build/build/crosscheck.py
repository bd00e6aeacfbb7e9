"""Checks across a project's models: outputs that clash or overwrite what another model reads.

Each problem is reported with the models it concerns, so the others can still be built. Only
resolves paths; reads no file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from .compilespec import CompileSpec
from .layout import CONFIG_DIR, STATE_DIR
from .paths import SymlinkLoopError, display, real


class ModelSpec(Protocol):
    """What these checks read of a `project.ModelSpec` (a protocol: project imports this)."""

    @property
    def name(self) -> str: ...
    @property
    def config_path(self) -> Path: ...
    @property
    def source(self) -> Path: ...
    @property
    def output(self) -> Path: ...
    @property
    def compile(self) -> CompileSpec | None: ...
    def rel(self, path: Path) -> str: ...
    def artifact_paths(self) -> dict[str, Path]: ...


__all__ = ["Report", "check_project"]

# Files a problem under the models it names (each of them is broken), with its message.
Report = Callable[[Iterable[str], str], None]


def check_project(models: Mapping[str, ModelSpec], root: Path, add: Report) -> None:
    """Report outputs that clash, overwrite an input or sit in configs/, and compile folders.

    A compile folder must not hold anything another step reads or writes (see
    `_check_compile_outputs`).
    """
    config_dir = root / CONFIG_DIR
    readers: dict[Path, list[tuple[ModelSpec, str]]] = {}  # real path -> (model, key) reading it
    for spec in models.values():
        keyed = {"source": spec.source}
        keyed.update({f"artifacts.{k}": p for k, p in spec.artifact_paths().items()})
        for key, path in keyed.items():
            readers.setdefault(real(path), []).append((spec, key))

    writers: dict[Path, list[ModelSpec]] = {}
    for spec in models.values():
        out = real(spec.output)
        writers.setdefault(out, []).append(spec)
        rel = display(spec.config_path, root)
        shown = spec.rel(spec.output)
        if out.is_relative_to(config_dir):
            add(
                [spec.name],
                f"{rel}: output: {shown} is inside {CONFIG_DIR}/; outputs must go elsewhere "
                f"(e.g. build/{spec.name}_ane.onnx)",
            )
        for reader, key in readers.get(out, []):
            what = (
                f"this model's {key}"
                if reader is spec
                else f"the {key} of model {reader.name!r} ({display(reader.config_path, root)})"
            )
            add([spec.name], f"{rel}: output: {shown} is also {what}; it would be overwritten")
    for out, specs in writers.items():
        if len(specs) > 1:
            names = ", ".join(display(s.config_path, root) for s in specs)
            add(
                [s.name for s in specs],
                f"{names}: output: these models all write {display(out, root)}; give each its "
                "own output",
            )
    _check_compile_outputs(models, root, add)


def _owned(models: Mapping[str, ModelSpec], root: Path) -> list[tuple[Path, str, str | None]]:
    """What a compile folder must not hold: (real path, what it is, the model it belongs to)."""
    owned: list[tuple[Path, str, str | None]] = [
        (root / CONFIG_DIR, f"the {CONFIG_DIR}/ folder", None),
        (root / STATE_DIR, f"the {STATE_DIR}/ folder", None),
    ]
    for spec in models.values():
        owned.append((real(spec.source), f"the source of model {spec.name!r}", spec.name))
        owned.append((real(spec.output), f"the output of model {spec.name!r}", spec.name))
        tool = spec.compile.tool if spec.compile is not None else None
        if tool is not None:
            # A tool behind a symlink loop cannot be deleted by a compile; the step reports it.
            with contextlib.suppress(SymlinkLoopError):
                owned.append((real(tool), f"the compile.tool of model {spec.name!r}", spec.name))
    return owned


def _check_compile_outputs(models: Mapping[str, ModelSpec], root: Path, add: Report) -> None:
    """A compile replaces its outputs folder whole: it must hold nothing else we read or write."""
    owned = _owned(models, root)
    folders: dict[Path, list[ModelSpec]] = {}
    for spec in models.values():
        if spec.compile is None:
            continue
        folder = real(spec.compile.outputs)
        folders.setdefault(folder, []).append(spec)
        prefix = f"{display(spec.config_path, root)}: compile.outputs: "
        prefix += spec.rel(spec.compile.outputs)
        if root.is_relative_to(folder):
            add([spec.name], f"{prefix} would replace the project root")
            continue
        for path, what, owner in owned:
            if path.is_relative_to(folder):
                names = [spec.name] if owner is None else [spec.name, owner]
                add(names, f"{prefix} holds {what}, which every compile would delete")
    for folder, specs in folders.items():
        if len(specs) > 1:
            files = ", ".join(display(s.config_path, root) for s in specs)
            add(
                [s.name for s in specs],
                f"{files}: compile.outputs: these models all write {display(folder, root)}; "
                "give each its own folder (e.g. with {name} in the path)",
            )
