"""A model's ``[compile]`` step with its paths resolved: what to run, what it reads and writes.

Resolution (placeholders known at load time, paths made absolute) happens when a project loads;
the command line is filled in when the compiler runs. This module reads no file and runs nothing.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import CompileConfig
from .placeholders import expand

__all__ = ["CompileSpec", "resolve_compile"]


@dataclass(frozen=True)
class CompileSpec:
    """One model's compile step, paths absolute.

    Attributes:
        command: The command line's templates (run placeholders still in them).
        tool: The compiler executable, tracked by content; None when not configured.
        inputs: Absolute paths or glob patterns of extra files the compiler reads.
        outputs: The folder the compiler's output replaces.
        timeout_s: Seconds before the compiler is stopped.
        env: Extra environment variables (templates).
    """

    command: tuple[str, ...]
    tool: Path | None
    inputs: tuple[str, ...]
    outputs: Path
    timeout_s: float
    env: dict[str, str] = field(hash=False)

    def values(self, name: str, root: Path, source: Path, out: Path) -> dict[str, str]:
        """The run placeholders' values for one compile (``out`` is the fresh folder)."""
        return {
            "name": name,
            "root": os.fspath(root),
            "source": os.fspath(source),
            "out": os.fspath(out),
            "tool": os.fspath(self.tool) if self.tool is not None else "",
            "python": sys.executable,
        }

    def argv(self, values: dict[str, str]) -> list[str]:
        """The command line to run."""
        return [expand(arg, values) for arg in self.command]

    def environment(self, values: dict[str, str]) -> dict[str, str]:
        """The configured variables, placeholders filled in."""
        return {key: expand(text, values) for key, text in self.env.items()}


def _absolute(text: str, root: Path) -> str:
    path = Path(text).expanduser()
    return os.path.normpath(path if path.is_absolute() else root / path)


def resolve_compile(name: str, config: CompileConfig, root: Path) -> CompileSpec:
    """Fill in ``{name}`` and ``{root}`` and make every path absolute (lexically)."""
    values = {"name": name, "root": os.fspath(root)}
    tool = expand(config.tool, values) if config.tool is not None else None
    return CompileSpec(
        command=config.command,
        tool=Path(_absolute(tool, root)) if tool is not None else None,
        inputs=tuple(_absolute(expand(p, values), root) for p in config.inputs),
        outputs=Path(_absolute(expand(config.outputs, values), root)),
        timeout_s=config.timeout_s,
        env=dict(config.env),
    )


def is_pattern(path: str) -> bool:
    """Whether an input is a glob pattern rather than a file path."""
    return glob.has_magic(path)


def pattern_base(pattern: str) -> Path:
    """The deepest folder of ``pattern`` without glob characters (where matching starts)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path("/")
