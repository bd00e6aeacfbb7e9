"""The project's task graph (models, their inputs and settings), cached so a no-op build is cheap.

Building the graph means parsing every config with pydantic and walking every artefact root and
input glob; the cache in ``.ane_build/graph.json`` is reused while nothing it was built from
changed, which is checked with ``stat`` calls only (configs, sources, and every folder a walk or
glob listed: adding or removing a file changes its folder's mtime). Models whose config is broken
are kept aside with their problems, so the others still build. This module imports no pydantic
model, doit or watchdog at module level; the slow path imports them when it runs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import write_atomic
from .layout import (
    COMPILED_DIR,
    CONFIG_DIR,
    GRAPH_FILE,
    STATE_DIR,
    SYNTHETIC_FILE,
    build_version,
)
from .llmsplit import LlmSplit
from .state import DigestCache, read_json

if TYPE_CHECKING:
    from .project import ModelSpec, Project

log = logging.getLogger(__name__)

GRAPH_VERSION = 4
CONVERT_SECTIONS = ("source", "output", "toolchain", "allow_outside_root", "artifacts")
DEPLOY_SECTIONS = ("deploy", "check")
COMPILE_SECTIONS = ("compile",)
# Changing how long the compiler may run changes nothing it produces.
_NOT_COMPILE_SETTINGS = ("compile.timeout_s",)


def settings_digest(settings: dict[str, Any]) -> str:
    """Stable digest of a flat settings dict."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ModelNode:
    """What the build system needs to know of one model, as plain data.

    ``*_digest`` digest the settings dicts (stored, not derived on every up-to-date check).
    Compile fields are empty for a model without a compile step.

    Attributes:
        inputs: The files the container is built from (convert's file dependencies): the
            source, its external data, the compile manifest and artefacts outside the compile
            folder.
        roots: Folders searched for artefacts (watched recursively); never a compile folder.
        tool: The compiler executable, if configured.
        compile_inputs: Files the compile reads that exist: the source, the tool, every match of
            ``compile.inputs``.
        compile_missing: Configured compile files (tool, plain inputs) that do not exist.
        compile_outputs: The folder the compiler's output replaces.
        manifest: The compile step's manifest (its target, a convert input).
        data_files: The source's external data files.
        data_locations: Their locations as the source names them (same order).
        data_copies: (data file, its copy next to the output) when the output is elsewhere.
        deploy_inputs: Files the deploy's check reads (``[check] data``).
        split: For a program of an ``[llm]`` model, that model (its split writes the source).
    """

    name: str
    config: str
    source: str
    output: str
    inputs: tuple[str, ...]
    roots: tuple[str, ...]
    convert_settings: dict[str, Any]
    deploy_settings: dict[str, Any]
    device: str
    submit_mode: str
    convert_digest: str
    deploy_digest: str
    tool: str | None = None
    compile_inputs: tuple[str, ...] = ()
    compile_missing: tuple[str, ...] = ()
    compile_outputs: str | None = None
    manifest: str | None = None
    compile_settings: dict[str, Any] = field(default_factory=dict)
    compile_digest: str = ""
    data_files: tuple[str, ...] = ()
    data_locations: tuple[str, ...] = ()
    data_copies: tuple[tuple[str, str], ...] = ()
    deploy_inputs: tuple[str, ...] = ()
    split: str | None = None


@dataclass(frozen=True)
class TaskGraph:
    """Every model of a project, sorted by name, and the models whose config is broken.

    ``watched`` maps what the graph was built from (configs, and every folder a walk or glob
    listed) to its stamp then: while none of them changed, neither did the graph. ``splits``
    holds the split step of every ``[llm]`` model; its programs are models of their own.
    """

    root: Path
    models: dict[str, ModelNode]
    broken: dict[str, tuple[str, ...]] = field(default_factory=dict)
    watched: dict[str, list[int] | None] = field(default_factory=dict)
    splits: dict[str, LlmSplit] = field(default_factory=dict)

    def unchanged(self) -> bool:
        """Whether everything the graph was built from is as it was then (stat calls only)."""
        return _stamps_hold(self.watched)

    @property
    def outputs(self) -> frozenset[Path]:
        """Every model's container path."""
        return frozenset(Path(m.output) for m in self.models.values())

    @property
    def names(self) -> list[str]:
        """Every model name, broken ones included, sorted."""
        return sorted({*self.models, *self.broken})


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return path


def manifest_path(root: Path, name: str) -> Path:
    """Where the compile step of ``name`` records what it produced."""
    return root / STATE_DIR / COMPILED_DIR / f"{name}.json"


def load_graph(root: Path, cache: DigestCache) -> TaskGraph:
    """The project's task graph: from the cache when still valid, else built and cached.

    Raises:
        ConfigError: The project has no configs folder (only on the slow path, which reads
            it); broken configs are in `TaskGraph.broken` instead.
    """
    path = root / STATE_DIR / GRAPH_FILE
    data = read_json(path)
    if (
        isinstance(data, dict)
        and data.get("version") == GRAPH_VERSION
        and data.get("ane_build") == build_version()
    ):
        watched = data.get("watched")
        if isinstance(watched, dict) and still_valid(root, watched):
            try:
                return _from_json(root, data, dict(watched["stamps"]))
            except (KeyError, TypeError):
                pass
    graph, watched = build_graph(root, cache)
    body = {
        "version": GRAPH_VERSION,
        "ane_build": build_version(),
        "watched": watched,
        "models": {name: asdict(node) for name, node in graph.models.items()},
        "broken": graph.broken,
        "splits": {name: asdict(split) for name, split in graph.splits.items()},
    }
    try:
        write_atomic(path, json.dumps(body, separators=(",", ":")).encode())
    except OSError as exc:
        log.warning("could not cache the task graph: %s", exc)
    return graph


def still_valid(root: Path, watched: dict[str, Any]) -> bool:
    """Whether nothing a graph was built from changed (stat calls only)."""
    listing = sorted(p.name for p in (root / CONFIG_DIR).glob("*.toml"))
    if listing != watched.get("configs"):
        return False
    stamps = watched.get("stamps")
    return isinstance(stamps, dict) and _stamps_hold(stamps)


def _stamps_hold(stamps: dict[str, Any]) -> bool:
    return all(_stamp(path) == stamp for path, stamp in stamps.items())


class _Walk:
    """What one graph build looked at: stamps of files and folders, memoised graph facts."""

    def __init__(self, root: Path, cache: DigestCache) -> None:
        self.root = root
        self.cache = cache
        self.stamps: dict[str, list[int] | None] = {}

    def watch(self, path: Path | str) -> None:
        self.stamps[os.fspath(path)] = _stamp(os.fspath(path))

    def external_data(self, source: Path) -> list[str]:
        """The source's external data locations (memoised by its fingerprint)."""
        from ..container import external_data_locations
        from ..errors import AneError

        self.watch(source)
        try:
            st = os.stat(source)
        except OSError:
            return []
        key = f"ext:{source}"
        locations = self.cache.memo(key, st)
        if locations is None:
            try:
                locations = external_data_locations(source)
            except AneError:
                locations = []  # the convert step reports a broken source in full
            self.cache.remember(key, st, locations)
        return list(locations)

    def discover(self, folder: Path) -> list[Path]:
        """Artefact candidates under ``folder``; every folder walked is watched."""
        from ..artifacts import discover_candidates
        from ..errors import AneError

        dirs: list[Path] = []
        try:
            candidates = discover_candidates(folder, visited=dirs)
        except AneError:
            self.watch(_nearest_existing(folder))
            return []  # the convert step reports a missing root in full
        for walked in dirs:
            self.watch(walked)
        return [p for paths in candidates.values() for p in paths]

    def expand(self, pattern: str) -> list[str]:
        """The files a compile input (a path or a glob) names; the folders listed are watched."""
        from .compilespec import is_pattern, pattern_base

        if not is_pattern(pattern):
            self.watch(pattern)
            return [pattern] if os.path.isfile(pattern) else []
        parts = Path(pattern).parts
        base = pattern_base(pattern)
        self.watch(_nearest_existing(base))
        for depth in range(len(base.parts), len(parts) - 1):
            for folder in glob.glob(os.path.join(*parts[: depth + 1]), recursive=True):
                if os.path.isdir(folder):
                    self.watch(folder)
        return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def build_graph(root: Path, cache: DigestCache) -> tuple[TaskGraph, dict[str, Any]]:
    """Read every config and walk every artefact root (the slow path).

    Returns:
        The graph, and what must stay unchanged for it to remain valid.
    """
    from .project import load_project

    project = load_project(root, strict=False)
    walk = _Walk(root, cache)
    walk.watch(root / CONFIG_DIR)
    for config_file in project.config_files:
        walk.watch(config_file)
    for name in project.broken:
        walk.watch(root / CONFIG_DIR / f"{name}.toml")
    walk.watch(root / SYNTHETIC_FILE)
    for split in project.splits.values():
        # New or removed shards and a changed config.json change the programs.
        walk.watch(split.checkpoint)
        walk.watch(os.path.join(split.checkpoint, "config.json"))
    models = {name: _node(spec, walk) for name, spec in project.models.items()}
    broken = dict(project.broken)
    for name, problems in _external_data_problems(project, models).items():
        broken[name] = (*broken.get(name, ()), *problems)
        models.pop(name, None)
    watched = {
        "configs": sorted(p.name for p in (root / CONFIG_DIR).glob("*.toml")),
        "stamps": walk.stamps,
    }
    splits = {name: split for name, split in project.splits.items() if name not in broken}
    graph = TaskGraph(root, models, dict(sorted(broken.items())), dict(walk.stamps), splits)
    return graph, watched


def _node(spec: ModelSpec, walk: _Walk) -> ModelNode:
    """One model's node: its inputs found, its settings flattened and digested."""
    locations = walk.external_data(spec.source)
    inputs: list[Path] = [spec.source, *(spec.source.parent / loc for loc in locations)]
    compiled = spec.compile.outputs if spec.compile is not None else None
    roots: list[str] = []
    for key, path in spec.artifact_paths().items():
        if compiled is not None and path.is_relative_to(compiled):
            continue  # the compile manifest stands for everything in the compile folder
        if key == "root":
            roots.append(os.fspath(path))
            inputs += walk.discover(path)
        elif key == "bundle":
            from ..artifacts import bundle_file

            walk.watch(path)
            inputs.append(bundle_file(path))
        else:
            inputs.append(path)
    compile_fields = _compile_fields(spec, walk)
    if compile_fields:
        inputs.append(Path(compile_fields["manifest"]))
    convert = spec.settings(*CONVERT_SECTIONS)
    deploy = spec.settings(*DEPLOY_SECTIONS)
    return ModelNode(
        name=spec.name,
        config=os.fspath(spec.config_path),
        source=os.fspath(spec.source),
        output=os.fspath(spec.output),
        inputs=tuple(dict.fromkeys(os.fspath(p.absolute()) for p in inputs)),
        roots=tuple(roots),
        convert_settings=convert,
        deploy_settings=deploy,
        device=spec.config.deploy.device,
        submit_mode=spec.config.deploy.submit_mode,
        convert_digest=settings_digest(convert),
        deploy_digest=settings_digest(deploy),
        data_files=tuple(os.fspath(spec.source.parent / loc) for loc in locations),
        data_locations=tuple(locations),
        data_copies=_data_copies(spec, locations),
        deploy_inputs=tuple(_check_files(spec, walk)),
        split=spec.split,
        **compile_fields,
    )


def _compile_fields(spec: ModelSpec, walk: _Walk) -> dict[str, Any]:
    """The compile step's fields of a node (none without one)."""
    if spec.compile is None:
        return {}
    files = [os.fspath(spec.source)]
    missing = []
    configured = [os.fspath(spec.compile.tool)] if spec.compile.tool else []
    configured += spec.compile.inputs
    for pattern in configured:
        found = walk.expand(pattern)
        files += found
        if not found and not _is_pattern(pattern):
            missing.append(pattern)
    settings = {
        k: v for k, v in spec.settings(*COMPILE_SECTIONS).items() if k not in _NOT_COMPILE_SETTINGS
    }
    settings["source"] = spec.rel(spec.source)
    return {
        "tool": os.fspath(spec.compile.tool) if spec.compile.tool else None,
        "compile_inputs": tuple(dict.fromkeys(files)),
        "compile_missing": tuple(missing),
        "compile_outputs": os.fspath(spec.compile.outputs),
        "manifest": os.fspath(manifest_path(spec.root, spec.name)),
        "compile_settings": settings,
        "compile_digest": settings_digest(settings),
    }


def _is_pattern(text: str) -> bool:
    return glob.has_magic(text)


def _check_files(spec: ModelSpec, walk: _Walk) -> list[str]:
    """The files ``[check] data`` names: the file, or every file in the folder."""
    if spec.check_data is None:
        return []
    walk.watch(spec.check_data)
    if not spec.check_data.is_dir():
        return [os.fspath(spec.check_data)] if spec.check_data.exists() else []
    files = []
    for folder, dirs, names in os.walk(spec.check_data):
        walk.watch(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(folder, n) for n in sorted(names) if not n.startswith(".")]
    return files


def _data_copies(spec: ModelSpec, locations: list[str]) -> tuple[tuple[str, str], ...]:
    """(data file, its copy next to the output) for a source whose output is elsewhere.

    Only locations inside the source's folder can be copied to the same place beside the
    output; the writer refuses the others with the reason.
    """
    from ..container.external import safe_location

    if not locations:
        return ()
    source_dir = os.path.realpath(spec.source.parent)
    if source_dir == os.path.realpath(spec.output.parent):
        return ()
    return tuple(
        (os.fspath(spec.source.parent / loc), os.fspath(spec.output.parent / loc))
        for loc in locations
        if safe_location(loc)
    )


def _external_data_problems(project: Project, models: dict[str, ModelNode]) -> dict[str, list[str]]:
    """Problems with the source models' external data files, per model, one line each.

    Like every configured path, a data file must resolve (symlinks followed) inside the project
    root unless the model's config sets ``allow_outside_root``; no output may overwrite one, and
    two models may copy data to the same place only when it is the same file.
    """
    problems: dict[str, list[str]] = {}
    readers: dict[str, tuple[str, str]] = {}  # real path -> (model, location)
    copies: dict[str, tuple[str, str]] = {}  # copy -> (model, real data file)
    for name, node in models.items():
        spec = project.models[name]
        copied = dict(node.data_copies)
        for data, location in zip(node.data_files, node.data_locations, strict=True):
            copy = copied.get(data)
            real = os.path.realpath(data)
            readers.setdefault(real, (name, location))
            mine = problems.setdefault(name, [])
            if not spec.config.allow_outside_root and not Path(real).is_relative_to(project.root):
                mine.append(
                    f"{spec.rel(spec.config_path)}: source: {spec.rel(spec.source)} keeps "
                    f"tensors in external data {location!r}, which resolves to {real}, outside "
                    f"the project root {project.root}; set allow_outside_root = true to allow it"
                )
            if copy is not None:
                other = copies.setdefault(copy, (name, real))
                if other[1] != real:
                    mine.append(
                        f"{spec.rel(spec.config_path)}: external data {location!r} would be "
                        f"copied to {spec.rel(Path(copy))}, where model {other[0]!r} copies "
                        "different data; give the models different output folders"
                    )
    for name, spec in project.models.items():
        reader = readers.get(os.path.realpath(spec.output))
        if reader is not None:
            problems.setdefault(name, []).append(
                f"{spec.rel(spec.config_path)}: output: {spec.rel(spec.output)} is also the "
                f"external data file {reader[1]!r} of the source of model {reader[0]!r}; it would "
                "be overwritten"
            )
    return {name: lines for name, lines in problems.items() if lines}


def _from_json(root: Path, data: dict[str, Any], watched: dict[str, Any]) -> TaskGraph:
    models = {}
    for name, raw in data["models"].items():
        raw = dict(raw)
        for key in (
            "inputs",
            "roots",
            "compile_inputs",
            "compile_missing",
            "data_files",
            "data_locations",
            "deploy_inputs",
        ):
            raw[key] = tuple(raw[key])
        raw["data_copies"] = tuple(tuple(pair) for pair in raw["data_copies"])
        models[name] = ModelNode(**raw)
    broken = {name: tuple(lines) for name, lines in data["broken"].items()}
    splits = {name: LlmSplit.from_json(raw) for name, raw in data["splits"].items()}
    return TaskGraph(root, models, broken, watched, splits)
