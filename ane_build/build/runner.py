"""In-process doit runs on a project (holding its lock), and the watch loop built on them.

This is the one module that runs doit's command line from Python; it must not define tasks.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from .context import BuildContext, set_context
from .layout import CONFIG_DIR, DEPLOY_DIR, DIGESTS_FILE, LOGS_DIR, REPORT_FILE, STATE_DIR
from .llmsplit import split_inputs
from .state import DigestCache, project_lock
from .taskgraph import TaskGraph, load_graph

log = logging.getLogger(__name__)

# Watch builds run steps in threads: compilers (separate processes) overlap, and nothing is
# pickled or forked from a long-lived process.
WATCH_JOBS = ("-n", str(max(2, os.cpu_count() or 1)), "-P", "thread")


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

    with project_lock(root):
        ctx = BuildContext(root) if ctx is None else ctx
        set_context(ctx)
        try:
            # doit binds its report stream to sys.stdout when first imported; in a long-lived
            # process (watch mode, tests) that stream may since have been replaced or closed.
            main = DoitMain(
                ModuleTaskLoader(dodo), extra_config={"GLOBAL": {"outfile": sys.stdout}}
            )
            # Some doit commands (clean, forget) return None for success.
            return int(main.run(args) or 0)
        finally:
            ctx.save()
            set_context(None)


def _tasks_of(graph: TaskGraph, names: list[str]) -> list[str]:
    """The doit tasks that rebuild ``names`` (a broken config has one: its report)."""
    tasks = []
    for name in names:
        node = graph.models.get(name)
        if node is None:
            if name in graph.broken:
                tasks.append(f"convert:{name}")
            continue
        steps = ("compile",) if node.compile_outputs is not None else ()
        tasks += [f"{step}:{name}" for step in (*steps, "convert", "verify", "deploy")]
    return tasks


class _ProjectWatch:
    """The project side of watch mode: what to watch, what to ignore, how to build."""

    def __init__(self, root: Path) -> None:
        from .regress import snapshot

        self.root = root
        # One graph load per refresh of the watch lists (the watcher asks for inputs, then roots).
        self._graph: TaskGraph | None = None
        self._before = snapshot(BuildContext(root))

    def graph(self) -> TaskGraph:
        return self._graph if self._graph is not None else self.refresh()

    def refresh(self) -> TaskGraph:
        cache = DigestCache(self.root / STATE_DIR / DIGESTS_FILE)
        self._graph = load_graph(self.root, cache)
        cache.save()
        return self._graph

    def inputs(self) -> dict[str, list[Path]]:
        graph = self.refresh()
        # A program's source is its split's output: the checkpoint stands for it.
        checkpoints = {
            name: [Path(p) for p in split_inputs(Path(split.checkpoint))]
            for name, split in graph.splits.items()
        }
        return {
            n: [Path(p) for p in (*m.inputs, *m.compile_inputs, *m.deploy_inputs)]
            + checkpoints.get(m.split or "", [])
            for n, m in graph.models.items()
        }

    def roots(self) -> dict[str, list[Path]]:
        return {n: [Path(p) for p in m.roots] for n, m in self.graph().models.items()}

    def ignore(self, path: Path) -> bool:
        root = self.root
        if any(path.is_relative_to(root / d) for d in (STATE_DIR, DEPLOY_DIR, LOGS_DIR)):
            return True
        if path == root / REPORT_FILE or path in self.graph().outputs:
            return True
        if any(path.is_relative_to(s.output) for s in self.graph().splits.values()):
            return True  # written by the split step
        models = self.graph().models.values()
        return any(path.is_relative_to(m.compile_outputs) for m in models if m.compile_outputs)

    def build(self, models: frozenset[str] | None) -> object:
        """Build ``models`` (None: all), then print the regression table of those built."""
        from .regress import regression_table, snapshot

        graph = self.graph()
        names = graph.names if models is None else sorted(models & set(graph.names))
        args = [] if models is None else _tasks_of(graph, names)
        started = time.monotonic()
        code = run_doit(self.root, [*WATCH_JOBS, *args]) if args or models is None else 0
        took = time.monotonic() - started
        what = "all models" if models is None else ", ".join(names) or "nothing"
        log.info("watch: built %s in %.2f s (%s)", what, took, "ok" if code == 0 else "FAILED")
        after = snapshot(BuildContext(self.root))
        for line in regression_table(self._before, after, names):
            print(line, flush=True)
        self._before = after
        return code


def watch_project(
    root: Path,
    *,
    poll: bool = False,
    build_first: bool = True,
    stop: threading.Event | None = None,
) -> bool:
    """Rebuild (compile, convert, verify, deploy) affected models whenever their inputs change.

    After each build, prints a regression table: per model built, the compile's result, whether
    the container changed, and the check's verdict and largest error against the cycle before.

    Args:
        root: The project root.
        poll: Poll instead of inotify.
        build_first: Build every model once at start.
        stop: Set it (from another thread) to make watching end.

    Returns:
        True when Ctrl-C stopped it.

    Raises:
        WatchLimitError: The inotify limits are too low (the message says how to raise them).
    """
    from .watch import Watcher

    os.chdir(root)  # doit's state file is relative to the project root
    project = _ProjectWatch(root)
    return Watcher(
        inputs=project.inputs,
        build=project.build,
        config_dir=root / CONFIG_DIR,
        roots=project.roots,
        ignore=project.ignore,
        poll=poll,
        build_first=build_first,
    ).run(stop)
