"""doit task generators for a project: convert, verify, deploy, summary and smoke, per model.

Up-to-date decisions: file contents through `FingerprintChecker` (a persistent digest cache, so
unchanged files are never read and a touch is hashed once), configuration and hand-edited outputs
through our own build records, each with a human reason. Task logic lives here and in the modules
it calls; ``dodo.py`` files only re-export the generators. Nothing here runs on import.
"""

from __future__ import annotations

import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.dependency import FileChangedChecker

from .artifacts import bundle_file, discover_candidates
from .buildstate import STATE_DIR, DigestCache, FileState, RecordStore, write_atomic
from .config import ModelSpec, Project, find_project_root, load_project
from .errors import AneError, BuildError

log = logging.getLogger(__name__)

ALLOW_SIM_ENV = "ANE_BUILD_ALLOW_SIM"
DEPLOY_DIR = "build/deploy"
SMOKE_XML = "build/smoke.xml"
CONVERT_SECTIONS = ("source", "output", "toolchain", "allow_outside_root", "artifacts")
DEPLOY_SECTIONS = ("deploy",)

TaskDict = dict[str, Any]


# -- per-process context -------------------------------------------------------------------------


class BuildContext:
    """A loaded project plus its state stores, shared by the tasks of one doit run."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root
        state = self.root / STATE_DIR
        self.cache = DigestCache(state / "digests.json")
        self.records = RecordStore(state / "records")
        # Input states captured right before an action ran; `FingerprintChecker.get_state`
        # stores these, so a file rewritten during the build is seen as changed next time.
        self.snapshots: dict[str, FileState] = {}
        self._inputs: dict[str, list[Path]] = {}

    @classmethod
    def load(cls, start: Path | None = None) -> BuildContext:
        """Load the project around ``start`` (the working folder by default)."""
        return cls(load_project(find_project_root(start or Path.cwd())))

    def rel(self, path: Path) -> str:
        """``path`` for display, relative to the project root when inside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def inputs(self, spec: ModelSpec) -> list[Path]:
        """Every file a model's container is built from: source, external data, artefacts.

        Discovered artefacts are listed from the artefact root as it is now, so adding or
        removing one changes the list (and doit's file_dep) and rebuilds the model.
        """
        cached = self._inputs.get(spec.name)
        if cached is not None:
            return cached
        found: list[Path] = [spec.source, *self._external_data(spec.source)]
        for key, path in spec.artifact_paths().items():
            if key == "root":
                try:
                    candidates = discover_candidates(path)
                except AneError:
                    continue  # reported by the convert action with the full message
                found.extend(p for paths in candidates.values() for p in paths)
            elif key == "bundle":
                found.append(bundle_file(path))
            else:
                found.append(path)
        unique = list(dict.fromkeys(p.absolute() for p in found))
        self._inputs[spec.name] = unique
        return unique

    def _external_data(self, source: Path) -> list[Path]:
        try:
            st = os.stat(source)
        except OSError:
            return []
        key = f"ext:{source}"
        memo = self.cache.memo(key, st)
        if memo is None:
            memo = _external_locations(source)
            self.cache.remember(key, st, memo)
        return [source.parent / loc for loc in memo]

    def file_state(self, path: Path) -> FileState | None:
        """Current state of ``path``; None when it does not exist."""
        try:
            return self.cache.state(path)
        except FileNotFoundError:
            return None

    def save(self) -> None:
        """Persist the digest cache."""
        try:
            self.cache.save()
        except OSError as exc:
            log.warning("could not save the digest cache: %s", exc)


def _external_locations(source: Path) -> list[str]:
    """External data files a model references; a broken source yields none (convert says why)."""
    from .container import _external_locations as external_data_locations

    try:
        return external_data_locations(source)
    except AneError:
        return []


_context: BuildContext | None = None


def context() -> BuildContext:
    """The build context of this process, loaded on first use."""
    global _context
    if _context is None:
        _context = BuildContext.load()
    return _context


def set_context(ctx: BuildContext | None) -> None:
    """Install (or clear) the build context, e.g. for watch mode's in-process builds."""
    global _context
    _context = ctx


# -- file checker ------------------------------------------------------------------------------


class FingerprintChecker(FileChangedChecker):  # type: ignore[misc]
    """A doit file checker backed by the digest cache; state is ``[size, mtime_ns, sha256]``."""

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
        """Changed when the content digest differs (a touch alone is not a change)."""
        saved = FileState.from_json(state)
        if saved is None:
            return True
        if file_stat.st_size != saved.size:
            return True
        current = context().cache.state(Path(file_path), file_stat)
        return current.sha256 != saved.sha256

    def get_state(self, dep: str, current_state: Any) -> list[Any] | None:
        """The state captured before the action ran, or the current one."""
        ctx = context()
        snapshot = ctx.snapshots.get(os.path.abspath(dep))
        state = snapshot if snapshot is not None else ctx.cache.state(Path(dep))
        ctx.save()
        new = state.to_json()
        return None if new == current_state else new


# -- reasons -------------------------------------------------------------------------------------


def _short(sha: str) -> str:
    return sha[:12]


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def _describe_change(old: FileState, new: FileState) -> str:
    parts = []
    if old.size != new.size:
        parts.append(f"size {old.size:,} -> {new.size:,}")
    if old.mtime_ns != new.mtime_ns:
        parts.append(f"mtime {_when(old.mtime_ns)} -> {_when(new.mtime_ns)}")
    parts.append(f"sha256 {_short(old.sha256)} -> {_short(new.sha256)}")
    return ", ".join(parts)


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value)


def config_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per setting that differs between two flat settings dicts."""
    return [
        f"config {key} changed: {_show(old.get(key))} -> {_show(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def convert_reasons(ctx: BuildContext, spec: ModelSpec) -> list[str]:
    """Why a model's container is stale; empty when it is up to date."""
    record = ctx.records.get(spec.name, "convert")
    reasons: list[str] = []
    if not spec.output.exists():
        reasons.append(f"output {ctx.rel(spec.output)} is missing")
    if record is None:
        return [*reasons, "no build record (never built here, or the state was reset)"]
    if not reasons:
        reasons.extend(_output_reasons(ctx, spec, record.get("output")))
    reasons.extend(config_reasons(record.get("config", {}), spec.settings(*CONVERT_SECTIONS)))
    recorded = {Path(p): FileState.from_json(s) for p, s in record.get("inputs", {}).items()}
    current = ctx.inputs(spec)
    for path in current:
        old = recorded.get(path)
        new = ctx.file_state(path)
        if new is None:
            reasons.append(f"input {ctx.rel(path)} is missing")
        elif old is None:
            reasons.append(f"input {ctx.rel(path)} was added")
        elif old.sha256 != new.sha256:
            reasons.append(f"input {ctx.rel(path)} changed: {_describe_change(old, new)}")
    for path in recorded.keys() - set(current):
        reasons.append(f"input {ctx.rel(path)} was removed")
    return reasons


def _output_reasons(ctx: BuildContext, spec: ModelSpec, saved: Any) -> list[str]:
    old = FileState.from_json(saved)
    new = ctx.file_state(spec.output)
    if old is None or new is None or old.sha256 == new.sha256:
        return []
    return [f"output {ctx.rel(spec.output)} was modified: {_describe_change(old, new)}"]


def deploy_reasons(ctx: BuildContext, spec: ModelSpec) -> list[str]:
    """Why a model's deploy is stale, apart from its container's content (doit checks that)."""
    record = ctx.records.get(spec.name, "deploy")
    if record is None:
        return ["never deployed"]
    reasons = config_reasons(record.get("settings", {}), spec.settings(*DEPLOY_SECTIONS))
    container = ctx.file_state(spec.output)
    if container is not None and container.sha256 != record.get("container_sha256"):
        reasons.append(f"container {ctx.rel(spec.output)} changed since the last deploy")
    return reasons


def why(ctx: BuildContext, names: list[str] | None = None) -> dict[str, list[str]]:
    """Reasons per model (convert and deploy steps), without building anything."""
    out: dict[str, list[str]] = {}
    for name, spec in ctx.project.models.items():
        if names and name not in names:
            continue
        reasons = [f"convert: {r}" for r in convert_reasons(ctx, spec)]
        reasons += [f"deploy: {r}" for r in deploy_reasons(ctx, spec)]
        out[name] = reasons
    ctx.save()
    return out


# -- actions -------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


def convert_action(name: str) -> bool:
    """Doit action: rebuild one model's container, printing why and what came out."""
    from .convert import convert_model

    ctx = context()
    spec = ctx.project.models[name]
    for reason in convert_reasons(ctx, spec) or ["doit has no state for this task"]:
        _say(f"convert:{name}: {reason}")
    inputs = ctx.inputs(spec)
    snapshot: dict[str, FileState] = {}
    for path in inputs:
        state = ctx.file_state(path)
        if state is not None:
            snapshot[os.fspath(path)] = state
    ctx.snapshots.update(snapshot)
    progress = _Progress(f"convert:{name}")
    try:
        result = convert_model(
            spec.source,
            spec.artifacts,
            output=spec.output,
            toolchain=spec.config.toolchain,
            base_dir=ctx.root,
            allow_outside=spec.config.allow_outside_root,
            progress=progress,
        )
    except AneError as exc:
        progress.done()
        _say(f"convert:{name}: error: {exc}")
        return False
    progress.done()
    output_state = ctx.file_state(spec.output)
    ctx.records.put(
        name,
        "convert",
        {
            "inputs": {p: s.to_json() for p, s in snapshot.items()},
            "config": spec.settings(*CONVERT_SECTIONS),
            "output": output_state.to_json() if output_state else None,
            "finished": time.time(),
        },
    )
    ctx.save()
    for line in result.summary():
        _say(f"convert:{name}: {line}")
    _warn_if_changed_during_build(ctx, name, snapshot)
    return True


def _warn_if_changed_during_build(ctx: BuildContext, name: str, snap: dict[str, FileState]) -> None:
    for path, before in snap.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_size, st.st_mtime_ns) != (before.size, before.mtime_ns):
            _say(
                f"convert:{name}: warning: {ctx.rel(Path(path))} changed during the build; "
                "the next run rebuilds it"
            )


class _Progress:
    """Byte progress for long conversions: a line every 10% on large outputs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.next_pct = 10
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < (256 << 20):
            return
        pct = 100 * done // total
        if pct >= self.next_pct:
            rate = done / max(time.monotonic() - self.start, 1e-6) / (1 << 20)
            _say(f"{self.label}: {pct}% of {total >> 20} MiB ({rate:.0f} MiB/s)")
            self.next_pct = pct // 10 * 10 + 10

    def done(self) -> None:
        """Nothing to clean up; kept for symmetry with the CLI meter."""


def verify_action(name: str) -> bool:
    """Doit action: verify one container; print the failures."""
    from .container import verify_container

    ctx = context()
    spec = ctx.project.models[name]
    report = verify_container(spec.output)
    if report.ok:
        _say(f"verify:{name}: {len(report.checks)} checks passed")
        return True
    _say(f"verify:{name}: FAILED\n{report.summary()}")
    return False


def deploy_action(name: str) -> bool:
    """Doit action: verify and submit one container, write its JSON record."""
    from .deploy import deploy_container
    from .device import open_device

    ctx = context()
    spec = ctx.project.models[name]
    for reason in deploy_reasons(ctx, spec) or ["container changed"]:
        _say(f"deploy:{name}: {reason}")
    container = ctx.file_state(spec.output)
    try:
        with open_device(spec.config.deploy.device) as device:
            if device.is_simulated and spec.config.deploy.device == "auto":
                _say(f"deploy:{name}: no ANE hardware found; using the simulator")
            record = deploy_container(
                name,
                spec.output,
                device=device,
                mode=spec.config.deploy.submit_mode,
                record=ctx.root / DEPLOY_DIR / f"{name}.json",
            )
    except AneError as exc:
        _say(f"deploy:{name}: error: {exc}")
        return False
    ctx.records.put(
        name,
        "deploy",
        {
            "settings": spec.settings(*DEPLOY_SECTIONS),
            "container_sha256": container.sha256 if container else None,
        },
    )
    _say(f"deploy:{name}: {record.summary}")
    return True


def summary_action() -> None:
    """Doit action: one table of every model's container and last deploy."""
    ctx = context()
    rows = [("model", "container", "size", "td", "deployed to", "submit")]
    for name, spec in ctx.project.models.items():
        from .buildstate import read_json

        deploy = read_json(ctx.root / DEPLOY_DIR / f"{name}.json") or {}
        size = spec.output.stat().st_size if spec.output.exists() else 0
        where = deploy.get("device", "-")
        if deploy.get("simulated"):
            where = "simulator"
        td = f"{deploy.get('td_count', '-')}x0x{deploy.get('td_size', 0):x}" if deploy else "-"
        rows.append(
            (
                name,
                ctx.rel(spec.output),
                f"{size:,}",
                td,
                where,
                f"{deploy.get('submit_ms', 0):.2f} ms" if deploy else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        _say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            _say("  ".join("-" * w for w in widths))
    if any(r[4] == "simulator" for r in rows[1:]):
        _say("(simulator: submissions were validated, not run on ANE hardware)")


# -- smoke ---------------------------------------------------------------------------------------


@dataclass
class SmokeCase:
    """One model's smoke result."""

    name: str
    seconds: float
    error: str | None
    detail: str


def smoke_action() -> bool:
    """Doit action: submit every model on a real device; JUnit XML and a summary."""
    from .deploy import deploy_container
    from .device import ANEDevice, open_device

    ctx = context()
    allow_sim = os.environ.get(ALLOW_SIM_ENV) == "1"
    cases: list[SmokeCase] = []
    try:
        device = ANEDevice.open()
    except AneError as exc:
        if not allow_sim:
            _say(
                f"smoke: no ANE device: {exc}\nsmoke: refusing to use the simulator on a smoke "
                f"run; set {ALLOW_SIM_ENV}=1 to allow it (e.g. to test the pipeline in CI)"
            )
            _write_junit(ctx, [SmokeCase("device", 0.0, str(exc), "")], simulated=False)
            return False
        _say(f"smoke: no ANE device; {ALLOW_SIM_ENV}=1, so using the simulator")
        device = open_device("sim")
    with device:
        for name, spec in ctx.project.models.items():
            start = time.perf_counter()
            try:
                rec = deploy_container(
                    name, spec.output, device=device, mode=spec.config.deploy.submit_mode
                )
                cases.append(SmokeCase(name, time.perf_counter() - start, None, rec.summary))
            except AneError as exc:
                cases.append(SmokeCase(name, time.perf_counter() - start, str(exc), ""))
        simulated = device.is_simulated
    _write_junit(ctx, cases, simulated=simulated)
    failed = [c for c in cases if c.error]
    where = "the simulator" if simulated else device.path
    for case in cases:
        status = "FAIL" if case.error else "ok"
        _say(f"smoke: {case.name}: {status} ({case.seconds * 1e3:.1f} ms) {case.error or ''}")
    _say(f"smoke: {len(cases) - len(failed)} passed, {len(failed)} failed on {where}")
    return not failed


def _write_junit(ctx: BuildContext, cases: list[SmokeCase], *, simulated: bool) -> None:
    suite = ET.Element(
        "testsuite",
        name="ane_build.smoke",
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.error)),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="simulated", value=str(simulated).lower())
    for case in cases:
        el = ET.SubElement(suite, "testcase", classname="smoke", name=case.name)
        el.set("time", f"{case.seconds:.3f}")
        if case.error:
            ET.SubElement(el, "failure", message=case.error[:200]).text = case.error
        elif case.detail:
            ET.SubElement(el, "system-out").text = case.detail
    data = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    write_atomic(ctx.root / SMOKE_XML, data + b"\n")


# -- task generators -----------------------------------------------------------------------------


def _convert_uptodate(name: str) -> Callable[[], bool]:
    def check() -> bool:
        ctx = context()
        spec = ctx.project.models[name]
        record = ctx.records.get(name, "convert")
        if record is None:
            return False
        if config_reasons(record.get("config", {}), spec.settings(*CONVERT_SECTIONS)):
            return False
        return not _output_reasons(ctx, spec, record.get("output"))

    check.__name__ = f"convert_settings_and_output({name})"
    return check


def _deploy_uptodate(name: str) -> Callable[[], bool]:
    def check() -> bool:
        ctx = context()
        record = ctx.records.get(name, "deploy")
        if record is None:
            return False
        spec = ctx.project.models[name]
        return not config_reasons(record.get("settings", {}), spec.settings(*DEPLOY_SECTIONS))

    check.__name__ = f"deploy_settings({name})"
    return check


def gen_convert() -> Iterator[TaskDict]:
    """Tasks: one ``convert:<model>`` per config."""
    ctx = context()
    yield {"basename": "convert", "name": None, "doc": "build _ane.onnx containers"}
    for name, spec in ctx.project.models.items():
        yield {
            "basename": "convert",
            "name": name,
            "doc": f"embed {name}'s compiler artefacts into {ctx.rel(spec.output)}",
            "actions": [(convert_action, [name])],
            "file_dep": [os.fspath(p) for p in ctx.inputs(spec)],
            "targets": [os.fspath(spec.output)],
            "uptodate": [_convert_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_verify() -> Iterator[TaskDict]:
    """Tasks: one ``verify:<model>`` per config."""
    ctx = context()
    yield {"basename": "verify", "name": None, "doc": "check containers against kernel rules"}
    for name, spec in ctx.project.models.items():
        yield {
            "basename": "verify",
            "name": name,
            "doc": f"verify {ctx.rel(spec.output)}",
            "actions": [(verify_action, [name])],
            "file_dep": [os.fspath(spec.output)],
            "verbosity": 2,
        }


def gen_deploy() -> Iterator[TaskDict]:
    """Tasks: one ``deploy:<model>`` per config."""
    ctx = context()
    yield {"basename": "deploy", "name": None, "doc": "verify and submit containers"}
    for name, spec in ctx.project.models.items():
        record = ctx.root / DEPLOY_DIR / f"{name}.json"
        deploy = spec.config.deploy
        yield {
            "basename": "deploy",
            "name": name,
            "doc": f"submit {name} to {deploy.device} ({deploy.submit_mode} mode)",
            "actions": [(deploy_action, [name])],
            "file_dep": [os.fspath(spec.output)],
            "targets": [os.fspath(record)],
            "task_dep": [f"verify:{name}"],
            "uptodate": [_deploy_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_example() -> Iterator[TaskDict]:
    """Tasks: generate the synthetic inputs listed in ``synthetic.toml`` (none without it)."""
    from .example import load_synthetic, outputs_of

    ctx = context()
    spec = load_synthetic(ctx.root)
    yield {"basename": "example", "name": None, "doc": "generate synthetic example inputs"}
    if spec is None:
        return
    for name, model in spec.models.items():
        yield {
            "basename": "example",
            "name": name,
            "doc": f"generate {name}'s synthetic source and compiler output (not real ANE code)",
            "actions": [(_generate_action, [name])],
            "file_dep": [os.fspath(ctx.root / "synthetic.toml")],
            "targets": [os.fspath(p) for p in outputs_of(name, model, ctx.root)],
            "clean": True,
            "verbosity": 2,
        }


def _generate_action(name: str) -> None:
    from .example import generate_model, load_synthetic

    ctx = context()
    spec = load_synthetic(ctx.root)
    if spec is not None:
        for path in generate_model(name, spec.models[name], ctx.root):
            _say(f"example:{name}: wrote {ctx.rel(path)} (synthetic example input)")


def gen_summary() -> TaskDict:
    """Task: print the summary table after deploying."""
    return {
        "basename": "summary",
        "doc": "print a table of every model's container and deploy",
        "actions": [summary_action],
        "task_dep": ["deploy"],
        "uptodate": [False],
        "verbosity": 2,
    }


def gen_smoke() -> TaskDict:
    """Task: CI smoke run on a real device."""
    ctx = context()
    return {
        "basename": "smoke",
        "doc": f"submit every model on real ANE hardware (simulator only with {ALLOW_SIM_ENV}=1)",
        "actions": [smoke_action],
        "task_dep": ["verify"],
        "targets": [os.fspath(ctx.root / SMOKE_XML)],
        "uptodate": [False],
        "verbosity": 2,
    }


# -- in-process runs (watch mode) -------------------------------------------------------------


def run_doit(root: Path, args: list[str], ctx: BuildContext | None = None) -> int:
    """Run doit on the project in this process, holding the project lock.

    Args:
        root: The project root (doit's state file is relative to the working folder, so callers
            run from the root).
        args: doit's command line, e.g. ``["convert:relu"]`` or ``[]`` for the default tasks.
        ctx: The build context to use (a fresh load of the configs by default); pass one to read
            its counters afterwards.
    """
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import dodo
    from .buildstate import project_lock

    with project_lock(root):
        ctx = BuildContext.load(root) if ctx is None else ctx
        set_context(ctx)
        try:
            return int(DoitMain(ModuleTaskLoader(dodo)).run(args))
        finally:
            ctx.save()
            set_context(None)


def watch_project(root: Path, *, poll: bool = False, build_first: bool = True) -> None:
    """Rebuild (convert, verify, deploy) affected models whenever their inputs change.

    Raises:
        WatchLimitError: The inotify limits are too low (the message says how to raise them).
    """
    from .watch import Watcher

    os.chdir(root)  # doit's state file is relative to the project root
    state_dir = root / STATE_DIR

    # One project load per refresh of the watch lists (the watcher asks for inputs, then roots).
    current: list[BuildContext] = []

    def load() -> BuildContext:
        current[:] = [BuildContext.load(root)]
        return current[0]

    def latest() -> BuildContext:
        return current[0] if current else load()

    def inputs() -> dict[str, list[Path]]:
        ctx = load()
        found = {name: ctx.inputs(spec) for name, spec in ctx.project.models.items()}
        ctx.save()
        return found

    def roots() -> dict[str, list[Path]]:
        return {
            name: [p for k, p in spec.artifact_paths().items() if k == "root"]
            for name, spec in latest().project.models.items()
        }

    def ignore(path: Path) -> bool:
        if path.is_relative_to(state_dir) or path.is_relative_to(root / DEPLOY_DIR):
            return True
        return path in latest().project.outputs

    def build(models: frozenset[str] | None) -> object:
        steps = ("convert", "verify", "deploy")
        args = [] if models is None else [f"{s}:{m}" for m in sorted(models) for s in steps]
        started = time.monotonic()
        code = run_doit(root, args)
        took = time.monotonic() - started
        what = "all models" if models is None else ", ".join(sorted(models))
        log.warning("watch: built %s in %.2f s (%s)", what, took, "ok" if code == 0 else "FAILED")
        return code

    Watcher(
        inputs=inputs,
        build=build,
        config_dir=root / "configs",
        roots=roots,
        ignore=ignore,
        poll=poll,
        build_first=build_first,
    ).run()


__all__ = [
    "BuildContext",
    "BuildError",
    "FingerprintChecker",
    "context",
    "convert_reasons",
    "deploy_reasons",
    "gen_convert",
    "gen_deploy",
    "gen_example",
    "gen_smoke",
    "gen_summary",
    "gen_verify",
    "run_doit",
    "set_context",
    "watch_project",
    "why",
]
