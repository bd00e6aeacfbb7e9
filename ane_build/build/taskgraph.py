"""The project's task graph (models, their inputs and settings), cached so a no-op build is cheap.

Building the graph means parsing every config with pydantic and walking every artefact root; the
cache in ``.ane_build/graph.json`` is reused while nothing it was built from changed, which is
checked with ``stat`` calls only (configs, sources, and every folder discovery walked: adding or
removing a file changes its folder's mtime). This module imports no pydantic model, doit or
watchdog at module level; the slow path imports them when it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import write_atomic
from ..errors import ConfigError
from .layout import CONFIG_DIR, GRAPH_FILE, STATE_DIR, SYNTHETIC_FILE
from .state import DigestCache, read_json

if TYPE_CHECKING:
    from .project import Project

log = logging.getLogger(__name__)

GRAPH_VERSION = 2
CONVERT_SECTIONS = ("source", "output", "toolchain", "allow_outside_root", "artifacts")
DEPLOY_SECTIONS = ("deploy",)


def settings_digest(settings: dict[str, Any]) -> str:
    """Stable digest of a flat settings dict."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ModelNode:
    """What the build system needs to know of one model, as plain data.

    ``convert_digest`` and ``deploy_digest`` digest the two settings dicts (stored, not derived
    on every up-to-date check).
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


@dataclass(frozen=True)
class TaskGraph:
    """Every model of a project, sorted by name."""

    root: Path
    models: dict[str, ModelNode]

    @property
    def outputs(self) -> frozenset[Path]:
        """Every model's container path."""
        return frozenset(Path(m.output) for m in self.models.values())


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


def load_graph(root: Path, cache: DigestCache) -> TaskGraph:
    """The project's task graph: from the cache when still valid, else built and cached.

    Raises:
        ConfigError: A config is invalid (only on the slow path, which reads them).
    """
    path = root / STATE_DIR / GRAPH_FILE
    data = read_json(path)
    if isinstance(data, dict) and data.get("version") == GRAPH_VERSION:
        watched = data.get("watched")
        if isinstance(watched, dict) and _still_valid(root, watched):
            try:
                return _from_json(root, data["models"])
            except (KeyError, TypeError):
                pass
    graph, watched = build_graph(root, cache)
    body = {"version": GRAPH_VERSION, "watched": watched, "models": _to_json(graph)}
    try:
        write_atomic(path, json.dumps(body, separators=(",", ":")).encode())
    except OSError as exc:
        log.warning("could not cache the task graph: %s", exc)
    return graph


def _still_valid(root: Path, watched: dict[str, Any]) -> bool:
    listing = sorted(p.name for p in (root / CONFIG_DIR).glob("*.toml"))
    if listing != watched.get("configs"):
        return False
    stamps = watched.get("stamps")
    if not isinstance(stamps, dict):
        return False
    return all(_stamp(p) == s for p, s in stamps.items())


def build_graph(root: Path, cache: DigestCache) -> tuple[TaskGraph, dict[str, Any]]:
    """Read every config and walk every artefact root (the slow path).

    Returns:
        The graph, and what must stay unchanged for it to remain valid.
    """
    from ..artifacts import bundle_file, discover_candidates
    from ..container import external_data_locations
    from ..errors import AneError
    from .project import load_project

    project = load_project(root)
    stamps: dict[str, list[int] | None] = {}

    def watch(path: Path) -> None:
        stamps[os.fspath(path)] = _stamp(os.fspath(path))

    watch(root / CONFIG_DIR)
    for config_file in project.config_files:
        watch(config_file)
    watch(root / SYNTHETIC_FILE)
    models: dict[str, ModelNode] = {}
    data_files: dict[str, list[tuple[str, Path]]] = {}
    for name, spec in project.models.items():
        inputs: list[Path] = [spec.source]
        watch(spec.source)
        try:
            st = os.stat(spec.source)
        except OSError:
            st = None
        if st is not None:
            key = f"ext:{spec.source}"
            locations = cache.memo(key, st)
            if locations is None:
                try:
                    locations = external_data_locations(spec.source)
                except AneError:
                    locations = []  # the convert step reports a broken source in full
                cache.remember(key, st, locations)
            data_files[name] = [(loc, spec.source.parent / loc) for loc in locations]
            inputs += [path for _, path in data_files[name]]
        roots: list[str] = []
        for key, path in spec.artifact_paths().items():
            if key == "root":
                roots.append(os.fspath(path))
                dirs: list[Path] = []
                try:
                    candidates = discover_candidates(path, visited=dirs)
                except AneError:
                    watch(_nearest_existing(path))
                    continue  # the convert step reports a missing root in full
                for folder in dirs:
                    watch(folder)
                inputs += [p for paths in candidates.values() for p in paths]
            elif key == "bundle":
                watch(path)
                inputs.append(bundle_file(path))
            else:
                inputs.append(path)
        convert = spec.settings(*CONVERT_SECTIONS)
        deploy = spec.settings(*DEPLOY_SECTIONS)
        models[name] = ModelNode(
            name=name,
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
        )
    problems = _external_data_problems(project, data_files)
    if problems:
        raise ConfigError("\n".join(problems))
    watched = {
        "configs": sorted(p.name for p in (root / CONFIG_DIR).glob("*.toml")),
        "stamps": stamps,
    }
    return TaskGraph(root, models), watched


def _external_data_problems(
    project: Project, data_files: dict[str, list[tuple[str, Path]]]
) -> list[str]:
    """Problems with the source models' external data files, one line each, as config errors.

    Like every configured path, a data file must resolve (symlinks followed) inside the project
    root unless the model's config sets ``allow_outside_root``; and no output may overwrite one.
    """
    problems: list[str] = []
    readers: dict[str, tuple[str, str]] = {}  # real path -> (model, location)
    for name, files in data_files.items():
        spec = project.models[name]
        for location, path in files:
            real = os.path.realpath(path)
            readers.setdefault(real, (name, location))
            if not spec.config.allow_outside_root and not Path(real).is_relative_to(project.root):
                problems.append(
                    f"{spec.rel(spec.config_path)}: source: {spec.rel(spec.source)} keeps "
                    f"tensors in external data {location!r}, which resolves to {real}, outside "
                    f"the project root {project.root}; set allow_outside_root = true to allow it"
                )
    for spec in project.models.values():
        reader = readers.get(os.path.realpath(spec.output))
        if reader is not None:
            problems.append(
                f"{spec.rel(spec.config_path)}: output: {spec.rel(spec.output)} is also the "
                f"external data file {reader[1]!r} of the source of model {reader[0]!r}; it would "
                "be overwritten"
            )
    return problems


def _to_json(graph: TaskGraph) -> dict[str, Any]:
    return {name: asdict(node) for name, node in graph.models.items()}


def _from_json(root: Path, data: dict[str, Any]) -> TaskGraph:
    models = {}
    for name, raw in data.items():
        raw = dict(raw)
        raw["inputs"] = tuple(raw["inputs"])
        raw["roots"] = tuple(raw["roots"])
        models[name] = ModelNode(**raw)
    return TaskGraph(root, models)
