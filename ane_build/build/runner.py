"""In-process doit runs on a project (holding its lock), and the watch loop built on them.

This is the one module that runs doit's command line from Python; it must not define tasks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from .context import BuildContext, set_context
from .layout import CONFIG_DIR, DEPLOY_DIR, DIGESTS_FILE, STATE_DIR
from .state import DigestCache, project_lock
from .taskgraph import TaskGraph, load_graph

log = logging.getLogger(__name__)


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
            return int(main.run(args))
        finally:
            ctx.save()
            set_context(None)


def watch_project(root: Path, *, poll: bool = False, build_first: bool = True) -> bool:
    """Rebuild (convert, verify, deploy) affected models whenever their inputs change.

    Returns:
        True when Ctrl-C stopped it.

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
        cache = DigestCache(state_dir / DIGESTS_FILE)
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

    return Watcher(
        inputs=inputs,
        build=build,
        config_dir=root / CONFIG_DIR,
        roots=roots,
        ignore=ignore,
        poll=poll,
        build_first=build_first,
    ).run()
