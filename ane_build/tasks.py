"""doit task generators for a project: example, convert, verify, deploy, summary and smoke.

Up-to-date decisions: file contents through `FingerprintChecker` (a persistent digest cache, so
unchanged files are never read and a touch is hashed once); settings and hand-edited outputs
through values saved with each task; reasons, with old and new values, from our build records.
A no-op run reads the cached task graph and stats files: no config parsing, no hashing. Task
logic lives here and in the modules it calls; ``dodo.py`` files only re-export the generators.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doit.dependency import FileChangedChecker

from .buildstate import STATE_DIR, DigestCache, FileState, RecordStore, read_json, write_atomic
from .errors import AneError
from .graph import (
    SYNTHETIC_FILE,
    ModelNode,
    TaskGraph,
    find_project_root,
    load_graph,
)

if TYPE_CHECKING:
    from .config import Project

log = logging.getLogger(__name__)

ALLOW_SIM_ENV = "ANE_BUILD_ALLOW_SIM"
DEPLOY_DIR = "build/deploy"
SMOKE_XML = "build/smoke.xml"

TaskDict = dict[str, Any]


# -- per-process context -------------------------------------------------------------------------


class BuildContext:
    """A project's task graph and state stores, shared by the tasks of one doit run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        state = root / STATE_DIR
        self._cache: DigestCache | None = None
        self.records = RecordStore(state / "records")
        self._graph: TaskGraph | None = None
        # Input states captured right before an action ran; `FingerprintChecker.get_state`
        # stores these, so a file rewritten during the build is seen as changed next time.
        self.snapshots: dict[str, FileState] = {}
        self.built: dict[str, list[str]] = {"convert": [], "deploy": []}
        self._project: Project | None = None

    @classmethod
    def load(cls, start: Path | None = None) -> BuildContext:
        """Load the project around ``start`` (the working folder by default).

        Raises:
            ConfigError: No project there, or an invalid config.
        """
        return cls(find_project_root(start or Path.cwd()))

    @property
    def cache(self) -> DigestCache:
        """The digest cache, read on first use.

        Not at creation: doit creates the context before it takes the project lock, and a run
        that waited for another would otherwise save a cache from before that run, dropping
        every fingerprint the other run learnt (and re-reading those files next time).
        """
        if self._cache is None:
            self._cache = DigestCache(self.root / STATE_DIR / "digests.json")
        return self._cache

    @property
    def project(self) -> Project:
        """The fully validated project (parsed on first use: only actions need it)."""
        if self._project is None:
            from .config import load_project

            self._project = load_project(self.root)
        return self._project

    @property
    def graph(self) -> TaskGraph:
        """The task graph, loaded on first use: after the example task has generated inputs."""
        if self._graph is None:
            self._graph = load_graph(self.root, self.cache)
        return self._graph

    @property
    def models(self) -> dict[str, ModelNode]:
        """Models by name."""
        return self.graph.models

    def rel(self, path: Path | str) -> str:
        """``path`` for display, relative to the project root when inside it."""
        text = os.fspath(path)
        prefix = os.fspath(self.root) + os.sep
        return text[len(prefix) :] if text.startswith(prefix) else text

    def inputs(self, name: str) -> list[Path]:
        """Every file a model's container is built from: source, external data, artefacts."""
        return [Path(p) for p in self.models[name].inputs]

    def file_state(self, path: Path | str) -> FileState | None:
        """Current state of ``path``; None when it does not exist."""
        try:
            return self.cache.state(Path(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def save(self) -> None:
        """Persist the digest cache (if it was used)."""
        if self._cache is None:
            return
        try:
            self._cache.save()
        except OSError as exc:
            log.warning("could not save the digest cache: %s", exc)


_context: BuildContext | None = None


def context() -> BuildContext:
    """The build context of this process, loaded on first use (saved when the process exits)."""
    global _context
    if _context is None:
        _context = BuildContext.load()
        # doit has no end-of-run hook; without this, fingerprints learnt by an up-to-date check
        # (a touched input hashed once) would be forgotten and the file hashed again next run.
        atexit.register(_context.save)
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
        new = state.to_json()
        return None if new == current_state else new


# -- reasons -------------------------------------------------------------------------------------


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def _describe_change(old: FileState, new: FileState) -> str:
    parts = []
    if old.size != new.size:
        parts.append(f"size {old.size:,} -> {new.size:,}")
    if old.mtime_ns != new.mtime_ns:
        parts.append(f"mtime {_when(old.mtime_ns)} -> {_when(new.mtime_ns)}")
    parts.append(f"sha256 {old.sha256[:12]} -> {new.sha256[:12]}")
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


def _output_changed(ctx: BuildContext, output: str, saved: Any) -> FileState | None:
    """The output's current state when it differs in content from ``saved``, else None."""
    old = FileState.from_json(saved)
    new = ctx.file_state(output)
    if old is None or new is None or old.sha256 == new.sha256:
        return None
    return new


def convert_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's container is stale; empty when it is up to date."""
    node = ctx.models[name]
    record = ctx.records.get(name, "convert")
    reasons: list[str] = []
    if not os.path.exists(node.output):
        reasons.append(f"output {ctx.rel(node.output)} is missing")
    if record is None:
        return [*reasons, "no build record (never built here, or the state was reset)"]
    saved_output = FileState.from_json(record.get("output"))
    if not reasons and saved_output is not None:
        changed = _output_changed(ctx, node.output, record.get("output"))
        if changed is not None:
            change = _describe_change(saved_output, changed)
            reasons.append(f"output {ctx.rel(node.output)} was modified: {change}")
    reasons.extend(config_reasons(record.get("config", {}), node.convert_settings))
    recorded = {p: FileState.from_json(s) for p, s in record.get("inputs", {}).items()}
    for path in node.inputs:
        old = recorded.get(path)
        new = ctx.file_state(path)
        if new is None:
            reasons.append(f"input {ctx.rel(path)} is missing")
        elif old is None:
            reasons.append(f"input {ctx.rel(path)} was added")
        elif old.sha256 != new.sha256:
            reasons.append(f"input {ctx.rel(path)} changed: {_describe_change(old, new)}")
    for path in sorted(recorded.keys() - set(node.inputs)):
        reasons.append(f"input {ctx.rel(path)} was removed")
    return reasons


def deploy_reasons(ctx: BuildContext, name: str) -> list[str]:
    """Why a model's deploy is stale."""
    node = ctx.models[name]
    record = ctx.records.get(name, "deploy")
    if record is None:
        return ["never deployed"]
    reasons = config_reasons(record.get("settings", {}), node.deploy_settings)
    container = ctx.file_state(node.output)
    if container is not None and container.sha256 != record.get("container_sha256"):
        reasons.append(f"container {ctx.rel(node.output)} changed since the last deploy")
    return reasons


def why(ctx: BuildContext, names: list[str] | None = None) -> dict[str, list[str]]:
    """Reasons per model (convert and deploy steps), without building anything."""
    out: dict[str, list[str]] = {}
    for name in ctx.models:
        if names and name not in names:
            continue
        reasons = [f"convert: {r}" for r in convert_reasons(ctx, name)]
        reasons += [f"deploy: {r}" for r in deploy_reasons(ctx, name)]
        out[name] = reasons
    ctx.save()
    return out


# -- actions -------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


def convert_action(name: str) -> dict[str, Any] | bool:
    """Doit action: rebuild one model's container, printing why and what came out."""
    from .convert import convert_model

    ctx = context()
    node = ctx.models[name]
    reasons = convert_reasons(ctx, name)
    if not reasons:
        kept = _keep_current_output(ctx, name)
        if kept is not None:
            return kept
    for reason in reasons or ["doit has no state for this task"]:
        _say(f"convert:{name}: {reason}")
    snapshot: dict[str, FileState] = {}
    for path in node.inputs:
        state = ctx.file_state(path)
        if state is not None:
            snapshot[path] = state
    ctx.snapshots.update(snapshot)
    try:
        spec = ctx.project.models[name]
        result = convert_model(
            spec.source,
            spec.artifacts,
            output=spec.output,
            toolchain=spec.config.toolchain,
            base_dir=ctx.root,
            allow_outside=spec.config.allow_outside_root,
            progress=_Progress(f"convert:{name}"),
            known_digests={Path(p): state.sha256 for p, state in snapshot.items()},
        )
    except AneError as exc:
        _say(f"convert:{name}: error: {exc}")
        return False
    changed = _changed_during_build(snapshot)
    if changed:
        # The container took these digests from the snapshot; its bytes may not match them.
        for path in changed:
            _say(f"convert:{name}: error: {ctx.rel(path)} changed during the build; run again")
        return False
    output = ctx.file_state(node.output)
    output_json = output.to_json() if output else None
    ctx.records.put(
        name,
        "convert",
        {
            "inputs": {p: s.to_json() for p, s in snapshot.items()},
            "config": node.convert_settings,
            "output": output_json,
            "finished": time.time(),
        },
    )
    ctx.save()
    ctx.built["convert"].append(name)
    for line in result.summary():
        _say(f"convert:{name}: {line}")
    return {"settings": node.convert_digest, "output": output_json}


def _keep_current_output(ctx: BuildContext, name: str) -> dict[str, Any] | None:
    """The task values of an output our build record shows current; None to rebuild it.

    doit runs a convert task it has no state for. That happens when a run was killed after the
    action wrote the container and its record but before doit committed its own state, or when
    doit's state file was removed. The container then already holds exactly what a rebuild would
    write; rewriting it would only cost time and make ``why`` and doit disagree.
    """
    node = ctx.models[name]
    record = ctx.records.get(name, "convert")
    saved = FileState.from_json(record.get("output")) if record else None
    output = ctx.file_state(node.output)
    if saved is None or output is None or saved.sha256 != output.sha256:
        return None
    for path in node.inputs:
        state = ctx.file_state(path)
        if state is not None:
            ctx.snapshots[path] = state
    _say(
        f"convert:{name}: {ctx.rel(node.output)} is up to date per its build record; kept "
        "(doit had no state for this task)"
    )
    return {"settings": node.convert_digest, "output": output.to_json()}


def _changed_during_build(snapshot: dict[str, FileState]) -> list[str]:
    """Inputs whose size or mtime moved since the snapshot the action started from."""
    changed = []
    for path, before in snapshot.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (before.size, before.mtime_ns):
            changed.append(path)
    return changed


class _Progress:
    """Byte progress for long conversions: a line every 10% of large outputs."""

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


def verify_action(name: str) -> bool:
    """Doit action: verify one container; print the failures."""
    from .container import verify_container

    ctx = context()
    report = verify_container(ctx.models[name].output)
    if report.ok:
        _say(f"verify:{name}: {len(report.checks)} checks passed")
        return True
    _say(f"verify:{name}: FAILED\n{report.summary()}")
    return False


def deploy_action(name: str) -> dict[str, Any] | bool:
    """Doit action: verify and submit one container, write its JSON record."""
    from .deploy import deploy_container
    from .device import open_device

    ctx = context()
    node = ctx.models[name]
    for reason in deploy_reasons(ctx, name) or ["container changed"]:
        _say(f"deploy:{name}: {reason}")
    container = ctx.file_state(node.output)
    try:
        with open_device(node.device) as device:
            if device.is_simulated and node.device == "auto":
                _say(f"deploy:{name}: no ANE hardware found; using the simulator")
            record = deploy_container(
                name,
                Path(node.output),
                device=device,
                mode="direct" if node.submit_mode == "direct" else "onnx",
                record=ctx.root / DEPLOY_DIR / f"{name}.json",
            )
    except AneError as exc:
        _say(f"deploy:{name}: error: {exc}")
        return False
    ctx.records.put(
        name,
        "deploy",
        {
            "settings": node.deploy_settings,
            "container_sha256": container.sha256 if container else None,
        },
    )
    ctx.built["deploy"].append(name)
    _say(f"deploy:{name}: {record.summary}")
    return {"settings": node.deploy_digest}


def summary_action() -> None:
    """Doit action: a table of the models this run built or deployed, and a count of the rest."""
    ctx = context()
    touched = sorted(set(ctx.built["convert"]) | set(ctx.built["deploy"]))
    if not touched:
        _say(f"summary: all {len(ctx.models)} model(s) up to date")
        return
    rows = [("model", "container", "size", "td", "deployed to", "submit")]
    simulated = False
    for name in touched:
        node = ctx.models[name]
        deploy = read_json(ctx.root / DEPLOY_DIR / f"{name}.json") or {}
        size = os.path.getsize(node.output) if os.path.exists(node.output) else 0
        where = "simulator" if deploy.get("simulated") else deploy.get("device", "-")
        simulated |= bool(deploy.get("simulated"))
        td = f"{deploy['td_count']} x 0x{deploy['td_size']:x}" if deploy else "-"
        submit = f"{deploy['submit_ms']:.2f} ms" if deploy else "-"
        rows.append((name, ctx.rel(node.output), f"{size:,}", td, where, submit))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        _say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            _say("  ".join("-" * w for w in widths))
    rest = len(ctx.models) - len(touched)
    _say(f"{len(touched)} model(s) built or deployed, {rest} already up to date")
    if simulated:
        _say("(simulator: submissions were validated, not run on ANE hardware)")


# -- smoke ---------------------------------------------------------------------------------------


@dataclass
class SmokeCase:
    """One model's smoke result."""

    name: str
    seconds: float
    error: str | None
    detail: str
    skipped: str | None = None


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
        for name, node in ctx.models.items():
            start = time.perf_counter()
            try:
                rec = deploy_container(
                    name,
                    Path(node.output),
                    device=device,
                    mode="direct" if node.submit_mode == "direct" else "onnx",
                )
                took = time.perf_counter() - start
                reason = None
                if rec.simulated and not device.is_simulated:
                    reason = "synthetic container (not real ANE code): not submitted to hardware"
                cases.append(SmokeCase(name, took, None, rec.summary, reason))
            except AneError as exc:
                cases.append(SmokeCase(name, time.perf_counter() - start, str(exc), ""))
        simulated = device.is_simulated
        where = "the simulator" if simulated else device.path
    _write_junit(ctx, cases, simulated=simulated)
    failed = [c for c in cases if c.error]
    skipped = [c for c in cases if c.skipped]
    for case in cases:
        status = "FAIL" if case.error else "skipped" if case.skipped else "ok"
        why = case.error or case.skipped or ""
        _say(f"smoke: {case.name}: {status} ({case.seconds * 1e3:.1f} ms) {why}".rstrip())
    passed = len(cases) - len(failed) - len(skipped)
    tally = f"{passed} passed, {len(failed)} failed"
    if skipped:
        tally += f", {len(skipped)} skipped"
    _say(f"smoke: {tally} on {where}")
    return not failed


def _write_junit(ctx: BuildContext, cases: list[SmokeCase], *, simulated: bool) -> None:
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="ane_build.smoke",
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.error)),
        skipped=str(sum(1 for c in cases if c.skipped)),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="simulated", value=str(simulated).lower())
    for case in cases:
        el = ET.SubElement(suite, "testcase", classname="smoke", name=case.name)
        el.set("time", f"{case.seconds:.3f}")
        if case.error:
            ET.SubElement(el, "failure", message=case.error[:200]).text = case.error
        elif case.skipped:
            ET.SubElement(el, "skipped", message=case.skipped)
        elif case.detail:
            ET.SubElement(el, "system-out").text = case.detail
    data = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    write_atomic(ctx.root / SMOKE_XML, data + b"\n")


# -- task generators -----------------------------------------------------------------------------


def _convert_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        ctx = context()
        node = ctx.models[name]
        if values.get("settings") != node.convert_digest:
            return False
        saved = values.get("output")
        try:
            st = os.stat(node.output)
        except OSError:
            return False
        state = FileState.from_json(saved)
        if state is None:
            return False
        if (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
            return True
        return _output_changed(ctx, node.output, saved) is None

    check.__name__ = f"convert_settings_and_output({name})"
    return check


def _deploy_uptodate(name: str) -> Callable[[Any, dict[str, Any]], bool]:
    def check(task: Any, values: dict[str, Any]) -> bool:
        return bool(values.get("settings") == context().models[name].deploy_digest)

    check.__name__ = f"deploy_settings({name})"
    return check


def gen_example() -> Iterator[TaskDict]:
    """Tasks: generate the synthetic inputs listed in ``synthetic.toml`` (none without it)."""
    ctx = context()
    yield {"basename": "example", "name": None, "doc": "generate synthetic example inputs"}
    if not (ctx.root / SYNTHETIC_FILE).exists():
        return
    from .example import load_synthetic, outputs_of

    spec = load_synthetic(ctx.root)
    for name, model in spec.models.items() if spec else ():
        yield {
            "basename": "example",
            "name": name,
            "doc": f"generate {name}'s synthetic source and compiler output (not real ANE code)",
            "actions": [(_generate_action, [name])],
            "file_dep": [os.fspath(ctx.root / SYNTHETIC_FILE)],
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


def gen_convert() -> Iterator[TaskDict]:
    """Tasks: one ``convert:<model>`` per config."""
    ctx = context()
    yield {"basename": "convert", "name": None, "doc": "build _ane.onnx containers"}
    for name, node in ctx.models.items():
        yield {
            "basename": "convert",
            "name": name,
            "doc": f"embed {name}'s compiler artefacts into {ctx.rel(node.output)}",
            "actions": [(convert_action, [name])],
            "file_dep": list(node.inputs),
            "targets": [node.output],
            "uptodate": [_convert_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_verify() -> Iterator[TaskDict]:
    """Tasks: one ``verify:<model>`` per config."""
    ctx = context()
    yield {"basename": "verify", "name": None, "doc": "check containers against kernel rules"}
    for name, node in ctx.models.items():
        yield {
            "basename": "verify",
            "name": name,
            "doc": f"verify {ctx.rel(node.output)}",
            "actions": [(verify_action, [name])],
            "file_dep": [node.output],
            "verbosity": 2,
        }


def gen_deploy() -> Iterator[TaskDict]:
    """Tasks: one ``deploy:<model>`` per config."""
    ctx = context()
    yield {"basename": "deploy", "name": None, "doc": "verify and submit containers"}
    for name, node in ctx.models.items():
        yield {
            "basename": "deploy",
            "name": name,
            "doc": f"submit {name} to {node.device} ({node.submit_mode} mode)",
            "actions": [(deploy_action, [name])],
            "file_dep": [node.output],
            "targets": [os.fspath(ctx.root / DEPLOY_DIR / f"{name}.json")],
            "task_dep": [f"verify:{name}"],
            "uptodate": [_deploy_uptodate(name)],
            "clean": True,
            "verbosity": 2,
        }


def gen_summary() -> TaskDict:
    """Task: print what this run built and deployed."""
    return {
        "basename": "summary",
        "doc": "print a table of the containers built and deployed by this run",
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
        ctx: The build context to use (a fresh load by default); pass one to read its counters.
    """
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import dodo
    from .buildstate import project_lock

    with project_lock(root):
        ctx = BuildContext(root) if ctx is None else ctx
        set_context(ctx)
        try:
            # doit binds its report stream to sys.stdout when first imported; in a long-lived
            # process (watch mode, tests) that stream may since have been replaced or closed.
            main = DoitMain(
                ModuleTaskLoader(dodo), extra_config={"GLOBAL": {"outfile": sys.stdout}}
            )
            return int(main.run(args))
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
    # One graph load per refresh of the watch lists (the watcher asks for inputs, then roots).
    current: list[TaskGraph] = []

    def graph() -> TaskGraph:
        if not current:
            refresh()
        return current[0]

    def refresh() -> TaskGraph:
        cache = DigestCache(state_dir / "digests.json")
        current[:] = [load_graph(root, cache)]
        cache.save()
        return current[0]

    def inputs() -> dict[str, list[Path]]:
        return {n: [Path(p) for p in m.inputs] for n, m in refresh().models.items()}

    def roots() -> dict[str, list[Path]]:
        return {n: [Path(p) for p in m.roots] for n, m in graph().models.items()}

    def ignore(path: Path) -> bool:
        if path.is_relative_to(state_dir) or path.is_relative_to(root / DEPLOY_DIR):
            return True
        return path in graph().outputs

    def build(models: frozenset[str] | None) -> object:
        steps = ("convert", "verify", "deploy")
        args = [] if models is None else [f"{s}:{m}" for m in sorted(models) for s in steps]
        started = time.monotonic()
        code = run_doit(root, args)
        took = time.monotonic() - started
        what = "all models" if models is None else ", ".join(sorted(models))
        log.info("watch: built %s in %.2f s (%s)", what, took, "ok" if code == 0 else "FAILED")
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
