"""Load a project: every ``configs/*.toml`` validated, merged over the defaults, paths resolved.

Every path resolves against the project root (the folder holding ``configs/``), never the working
directory. All problems found while loading are reported together in one `ConfigError`, one line
each (``configs/relu.toml: artifacts.td_size: must be greater than 0 (got -3)``). This module must
not import doit or watchdog, must not read artefact contents (they may not exist yet; the build
says so) and only touches the file system to read the TOML files, an ``[llm]`` checkpoint's
``config.json`` (its programs are models of their own) and to resolve symlinks.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pydantic
import pydantic_core
from pydantic import BaseModel

from .. import _validation as v
from ..artifacts import ArtifactSpec
from ..errors import AneError, ConfigError
from .compilespec import CompileSpec, resolve_compile
from .config import ModelConfig
from .crosscheck import check_project
from .layout import CONFIG_DIR, DEFAULTS_FILE
from .llmsplit import LlmSplit, plan_model, program_name
from .paths import SymlinkLoopError, display, locate, resolve_dir

__all__ = ["ModelSpec", "Project", "SettingValue", "load_project"]

SettingValue: TypeAlias = str | int | float | bool | None

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DEFAULTS_FORBIDDEN = ("source", "output", "llm")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a loaded project, with every path resolved to an absolute path.

    Paths keep symlinks (a ``latest.anec`` symlink is followed when read, not frozen at load
    time); ``..`` components are resolved.

    Attributes:
        name: The model name (the config file stem).
        config_path: Absolute path of the model's TOML file.
        config: The validated configuration (defaults merged in).
        source: Absolute path of the source ONNX model.
        output: Absolute path of the container to write.
        artifacts: The artefact spec with every path field made absolute (the compile step's
            outputs folder is the root when ``[artifacts]`` names no path).
        root: The project root, for display.
        compile: The compile step, None when the model has none.
        check_data: Absolute path of ``[check] data``, or None.
        split: For a program of an ``[llm]`` model, that model's name (its source is a graph
            the model's split writes).
    """

    name: str
    config_path: Path
    config: ModelConfig
    source: Path
    output: Path
    artifacts: ArtifactSpec
    root: Path
    compile: CompileSpec | None = None
    check_data: Path | None = None
    split: str | None = None

    def rel(self, path: Path) -> str:
        """``path`` relative to the project root when inside it (POSIX), else absolute."""
        return display(path, self.root)

    def artifact_paths(self) -> dict[str, Path]:
        """The explicitly configured artefact paths, keyed by field name (``root``, ``anec``...)."""
        return {
            key: value
            for key in type(self.artifacts).model_fields
            if isinstance(value := getattr(self.artifacts, key), Path)
        }

    def as_flat_dict(self) -> dict[str, SettingValue]:
        """Every effective setting as a flat, sorted, JSON-compatible dict.

        Keys are dotted (``"artifacts.td_size"``, ``"deploy.device"``); unset optional values
        appear as None so that adding a key equal to its default changes nothing. Paths are shown
        relative to the project root, so moving the project changes nothing either.

        Returns:
            The settings, sorted by key.
        """
        flat: dict[str, SettingValue] = {
            "source": self.rel(self.source),
            "output": self.rel(self.output),
        }
        for key in type(self.config).model_fields:
            if key in flat:
                continue
            value = self.artifacts if key == "artifacts" else getattr(self.config, key)
            _flatten(key, value, self.root, flat)
        return dict(sorted(flat.items()))

    def settings(self, *sections: str) -> dict[str, SettingValue]:
        """The flat settings restricted to ``sections`` (all of them when none is given).

        A section matches a key exactly or as a dotted prefix: ``"artifacts"`` selects every
        ``artifacts.*`` key, ``"source"`` selects ``source``.
        """
        flat = self.as_flat_dict()
        if not sections:
            return flat
        return {k: v for k, v in flat.items() if any(_in_section(k, s) for s in sections)}


@dataclass(frozen=True)
class Project:
    """A loaded project: its root and every model, sorted by name.

    Attributes:
        root: The project root (absolute, symlinks resolved).
        models: Model name to spec, sorted by name.
        defaults_path: ``configs/defaults.toml`` when present.
        broken: Models whose config has problems (left out of ``models``), with their problems
            one line each; only a project loaded with ``strict=False`` has any.
        splits: The split step of every ``[llm]`` model, by model name (its programs are in
            ``models`` as ``<model>.<program>``).
    """

    root: Path
    models: dict[str, ModelSpec] = field(hash=False)
    defaults_path: Path | None = None
    broken: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    splits: dict[str, LlmSplit] = field(default_factory=dict, hash=False)

    @property
    def config_dir(self) -> Path:
        """The ``configs/`` folder."""
        return self.root / CONFIG_DIR

    @property
    def config_files(self) -> tuple[Path, ...]:
        """Every TOML file the project was loaded from (models, then defaults)."""
        files = tuple(spec.config_path for spec in self.models.values())
        return (*files, self.defaults_path) if self.defaults_path else files


def load_project(root: Path, *, strict: bool = True) -> Project:
    """Load and validate every ``configs/*.toml`` of the project at ``root``.

    Args:
        root: The project root (the folder holding ``configs/``).
        strict: Raise on any problem. Otherwise models with problems are left out and listed
            in `Project.broken` with their problems (a problem of the shared defaults breaks
            every model), so the others can still be built.

    Returns:
        The project, models sorted by name.

    Raises:
        ConfigError: There is no ``configs/`` folder or (strict only) anything is wrong; the
            message lists every problem, one per line, each naming the file (relative to the
            root), the dotted key and the offending value.
    """
    root = resolve_dir(Path(root))
    config_dir = root / CONFIG_DIR
    if not config_dir.is_dir():
        raise ConfigError(f"{root}: no {CONFIG_DIR}/ folder (expected {config_dir})")
    problems = _Problems()

    defaults_file = config_dir / DEFAULTS_FILE
    defaults_path = defaults_file if defaults_file.is_file() else None
    defaults: dict[str, Any] = {}
    if defaults_path is not None:
        defaults = _read_toml(defaults_path, root, problems) or {}
        _check_defaults(defaults, defaults_path, root, problems)

    files = _model_files(config_dir, root, problems)
    models: dict[str, ModelSpec] = {}
    splits: dict[str, LlmSplit] = {}
    for name, path in files.items():
        problems.current = name
        data = _read_toml(path, root, problems)
        config = None
        if data is not None:
            config = _validate(name, path, data, defaults_path, defaults, root, problems)
        if config is not None and config.llm is not None:
            expanded = _make_llm_specs(name, path, config, root, problems)
            if expanded is not None:
                splits[name] = expanded[0]
                _add_programs(models, expanded[1], name, problems)
            continue
        spec = _make_spec(name, path, config, root, problems) if config is not None else None
        if spec is not None:
            models[name] = spec
    problems.current = None
    if defaults_path is not None and not files:
        # With no model to merge into, defaults errors would otherwise go unreported.
        _validate("", defaults_path, {}, defaults_path, defaults, root, problems)
    check_project(models, root, problems.add)

    if problems.lines and strict:
        raise ConfigError("\n".join(dict.fromkeys(problems.lines)))
    broken = problems.broken(files)
    models = {
        name: spec
        for name, spec in models.items()
        if name not in broken and spec.split not in broken
    }
    splits = {name: split for name, split in splits.items() if name not in broken}
    return Project(
        root=root,
        models=dict(sorted(models.items())),
        defaults_path=defaults_path,
        broken=broken,
        splits=splits,
    )


class _Problems:
    """Problem lines in the order found, each also filed under the model(s) it concerns.

    `append` files a line under ``current`` (the model being loaded), or as a problem of the
    whole project when no model is being loaded; `add` names the models explicitly.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.general: list[str] = []
        self.by_model: dict[str, list[str]] = {}
        self.current: str | None = None

    def append(self, line: str) -> None:
        self.add([self.current] if self.current is not None else [], line)

    def add(self, models: Iterable[str], line: str) -> None:
        self.lines.append(line)
        names = list(models)
        if not names:
            self.general.append(line)
        for name in names:
            self.by_model.setdefault(name, []).append(line)

    def broken(self, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Model name -> its problems (the project's own first), for models with any."""
        out = {}
        for name in sorted(set(names) | set(self.by_model)):
            lines = self.general + self.by_model.get(name, [])
            if lines:
                out[name] = tuple(dict.fromkeys(lines))
        return out


# --- loading -------------------------------------------------------------------------------


def _model_files(config_dir: Path, root: Path, problems: _Problems) -> dict[str, Path]:
    """Model name to config file, after checking names and case-insensitive clashes."""
    by_folded: dict[str, list[Path]] = {}
    for path in sorted(config_dir.iterdir()):
        # Hidden files are editor droppings (emacs lock files end in .toml too), not models.
        if path.suffix != ".toml" or path.name.startswith(".") or path.name == DEFAULTS_FILE:
            continue
        if not path.is_file():
            continue
        name = path.stem
        rel = display(path, root)
        if not _NAME_RE.fullmatch(name):
            problems.add(
                [name],
                f"{rel}: invalid model name {name!r}: use only letters, digits, '_', '.' and '-'",
            )
            continue
        if name.lower() == DEFAULTS_FILE.removesuffix(".toml"):
            problems.add(
                [name], f"{rel}: {name!r} is reserved; shared defaults go in {DEFAULTS_FILE}"
            )
            continue
        by_folded.setdefault(name.lower(), []).append(path)
    files: dict[str, Path] = {}
    for paths in by_folded.values():
        if len(paths) > 1:
            names = ", ".join(display(p, root) for p in paths)
            problems.add(
                [p.stem for p in paths],
                f"{names}: model names differ only in case; rename one (they would collide on "
                "case-insensitive file systems and in build outputs)",
            )
            continue
        files[paths[0].stem] = paths[0]
    return dict(sorted(files.items()))


def _read_toml(path: Path, root: Path, problems: _Problems) -> dict[str, Any] | None:
    rel = display(path, root)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{rel}: {_toml_error(exc)}")
    except UnicodeDecodeError as exc:
        problems.append(f"{rel}: not valid UTF-8 (byte {exc.start}); TOML files must be UTF-8")
    except OSError as exc:
        problems.append(f"{rel}: cannot read: {exc.strerror or exc}")
    return None


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    text = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match:
        message = text[: match.start()]
        return f"line {match[1]}, column {match[2]}: invalid TOML: {v.lower_first(message)}"
    match = re.search(r"\s*\(at end of document\)$", text)
    if match:
        return f"end of file: invalid TOML: {v.lower_first(text[: match.start()])}"
    return f"invalid TOML: {v.lower_first(text)}"


def _check_defaults(defaults: dict[str, Any], path: Path, root: Path, problems: _Problems) -> None:
    rel = display(path, root)
    for key in _DEFAULTS_FORBIDDEN:
        if key in defaults:
            problems.append(
                f"{rel}: {key}: not allowed in defaults (every model sets its own) "
                f"(got {v.show(defaults[key])})"
            )
            del defaults[key]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` onto ``base``: tables merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def _validate(
    name: str,
    path: Path,
    data: dict[str, Any],
    defaults_path: Path | None,
    defaults: dict[str, Any],
    root: Path,
    problems: _Problems,
) -> ModelConfig | None:
    """Validate one model (defaults merged under it); report problems against the right file."""
    merged = _merge(defaults, data)
    placeholder = not name
    if placeholder:
        merged.setdefault("source", "placeholder.onnx")

    def origin(loc: tuple[str | int, ...]) -> Path:
        if _has_path(data, loc) or defaults_path is None:
            return path
        return defaults_path if _has_path(defaults, loc) else path

    bad_locs: set[tuple[str | int, ...]] = set()
    for key, message in [] if placeholder else _source_problems(merged):
        bad_locs.add((key,))
        problems.append(f"{display(origin((key,)), root)}: {key}: {message}")
    for loc, value in _find_datetimes(merged):
        bad_locs.add(loc)
        problems.append(
            f"{display(origin(loc), root)}: {v.dotted(loc)}: must not be a TOML date or time "
            f"(got {v.show(value)})"
        )
    try:
        # JSON mode + strict: TOML values are already typed, so "4" for an integer, 4.0 for an
        # integer or "true" for a boolean is a mistake worth reporting, while strings still
        # validate as paths (python-mode strict would refuse str for Path).
        # inf/nan must stay numbers: the default JSON encoding turns them into null, which an
        # optional key would accept.
        text = pydantic_core.to_json(merged, inf_nan_mode="constants")
        config = ModelConfig.model_validate_json(text, strict=True)
    except pydantic.ValidationError as exc:
        for loc, message in v.problems(exc, merged, ModelConfig, v.TOML):
            if any(loc[: len(bad)] == bad for bad in bad_locs) or (not loc and bad_locs):
                continue  # already reported (a top-level error is the source/[llm] rule's)
            rel = display(origin(loc), root)
            problems.append(f"{rel}: {v.dotted(loc) or '(top level)'}: {message}")
        return None
    return None if placeholder or bad_locs else config


def _source_problems(merged: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A model has a source or an ``[llm]`` table, never both (said per key)."""
    if "llm" not in merged:
        return [] if "source" in merged else [("source", "required key is missing")]
    if "source" in merged:
        return [("llm", "a model has a source or an [llm] table, not both")]
    if "output" in merged:
        return [("output", "not used with [llm]: llm.output names the split folder")]
    return []


def _find_datetimes(
    data: Any, loc: tuple[str | int, ...] = ()
) -> Iterable[tuple[tuple[str | int, ...], Any]]:
    if isinstance(data, dt.date | dt.time):
        yield loc, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _find_datetimes(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _find_datetimes(value, (*loc, index))


def _has_path(data: Any, loc: tuple[str | int, ...]) -> bool:
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return False
    return bool(loc)


# --- resolution ----------------------------------------------------------------------------


def _place(
    key: str, raw: Path, root: Path, rel: str, allow_outside: bool, problems: _Problems
) -> tuple[Path, bool] | None:
    """Where a config path points, and whether it may be used (problems are added).

    Returns None on a symlink loop; else the path and False when it leaves the project root
    without ``allow_outside_root``.
    """
    try:
        where, real = locate(raw, root)
    except SymlinkLoopError:
        problems.append(f"{rel}: {key}: symlink loop while resolving (got {v.show(str(raw))})")
        return None
    if allow_outside or real.is_relative_to(root):
        return where, True
    problems.append(
        f"{rel}: {key}: resolves to {real}, outside the project root {root}; set "
        f"allow_outside_root = true to allow it (got {v.show(str(raw))})"
    )
    return where, False


def _make_spec(
    name: str, path: Path, config: ModelConfig, root: Path, problems: _Problems
) -> ModelSpec | None:
    rel = display(path, root)
    resolvable = True

    def place(key: str, raw: Path) -> Path | None:
        nonlocal resolvable
        placed = _place(key, raw, root, rel, config.allow_outside_root, problems)
        if placed is None:
            resolvable = False
            return None
        return placed[0]

    assert config.source is not None  # an [llm] model goes through _make_llm_specs
    source = place("source", config.source)
    raw_output = config.output or Path("build") / f"{name}_ane.onnx"
    output = place("output", raw_output)
    updates: dict[str, Path] = {}
    for key in type(config.artifacts).model_fields:
        raw = getattr(config.artifacts, key)
        if isinstance(raw, Path):
            where = place(f"artifacts.{key}", raw)
            if where is not None:
                updates[key] = where
    compile_spec = None
    if config.compile is not None and config.compile.enabled:
        # The tool and the compiler's own inputs are only read, and compilers are often built
        # outside the project: they may lie anywhere. The folder it writes may not.
        compile_spec = resolve_compile(name, config.compile, root)
        place("compile.outputs", compile_spec.outputs)
        if not updates:
            updates["root"] = compile_spec.outputs
    check_data = place("check.data", config.check.data) if config.check.data else None
    # Paths outside the root are reported but still checked against the other models, so one
    # run lists every problem; only an unresolvable path (symlink loop) drops the model.
    if not resolvable or source is None or output is None:
        return None
    return ModelSpec(
        name=name,
        config_path=path,
        config=config,
        source=source,
        output=output,
        artifacts=config.artifacts.model_copy(update=updates),
        root=root,
        compile=compile_spec,
        check_data=check_data,
    )


def _add_programs(
    models: dict[str, ModelSpec], programs: list[ModelSpec], model: str, problems: _Problems
) -> None:
    for spec in programs:
        if spec.name.lower() in {n.lower() for n in models}:
            problems.add(
                [model, spec.name],
                f"{display(spec.config_path, spec.root)}: program {spec.name!r} of the [llm] "
                f"model {model!r} has the name of another model; rename one",
            )
        models[spec.name] = spec


def _make_llm_specs(
    name: str, path: Path, config: ModelConfig, root: Path, problems: _Problems
) -> tuple[LlmSplit, list[ModelSpec]] | None:
    """The split step of an ``[llm]`` model and one spec per ANE program (none on a problem)."""
    assert config.llm is not None
    rel = display(path, root)
    placed = _place(
        "llm.checkpoint", config.llm.checkpoint, root, rel, config.allow_outside_root, problems
    )
    if placed is None or not placed[1]:
        return None
    where = placed[0]
    try:
        split, plan = plan_model(name, config.llm, where, root)
    except AneError as exc:
        problems.append(f"{rel}: llm: {exc}")
        return None
    check_data = locate(config.check.data, root)[0] if config.check.data else None
    specs = []
    for task in plan.programs:
        if task.container is None:
            continue
        program = program_name(name, task.name)
        compile_spec = None
        updates: dict[str, Any] = {"io": task.io}
        if config.compile is not None and config.compile.enabled:
            compile_spec = resolve_compile(program, config.compile, root)
            updates["root"] = compile_spec.outputs
        specs.append(
            ModelSpec(
                name=program,
                config_path=path,
                config=config,
                source=task.graph,
                output=task.container,
                artifacts=config.artifacts.model_copy(update=updates),
                root=root,
                compile=compile_spec,
                check_data=check_data,
                split=name,
            )
        )
    return split, specs


# --- formatting ----------------------------------------------------------------------------


def _flatten(prefix: str, value: Any, root: Path, out: dict[str, SettingValue]) -> None:
    if isinstance(value, BaseModel):
        for key in type(value).model_fields:
            _flatten(f"{prefix}.{key}", getattr(value, key), root, out)
    elif isinstance(value, Path):
        out[prefix] = display(value, root)
    elif value is None or isinstance(value, str | int | bool):
        out[prefix] = value
    elif isinstance(value, float):
        out[prefix] = value if math.isfinite(value) else str(value)
    else:
        out[prefix] = json.dumps(pydantic_core.to_jsonable_python(value), sort_keys=True)


def _in_section(key: str, section: str) -> bool:
    return key == section or key.startswith(section + ".")
