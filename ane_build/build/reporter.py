"""doit's reporter for ane_build projects: task lines, failures in one line, the summary at the end.

It prints no line per up-to-date task and no doit failure blocks for steps that failed (their
action printed the details; the summary repeats the one-line reason), nothing for tasks doit
skipped because a step before them failed, and the summary read from disk once the run is over.
It also writes ``build/report.json`` and, after a clean complete build, the no-op stamp.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from doit.exceptions import BaseFail, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from ..errors import AneError
from .context import context
from .noop import begin, write_stamp

log = logging.getLogger(__name__)

# Tasks a plain ``doit`` runs; only a clean run of all of them may leave the no-op stamp.
DEFAULT_TASKS = ("example", "split", "compile", "convert", "verify", "deploy", "orphans")


class BuildReporter(ConsoleReporter):  # type: ignore[misc]
    """The console reporter of ane_build projects (``DOIT_CONFIG["reporter"]``)."""

    desc = "ane_build: one line per failed step, a summary from the build records"
    last: ClassVar[BuildReporter | None] = None

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.selected: list[str] = []
        self.unmet: list[str] = []
        self.step_failures: list[str] = []
        self.other: dict[str, str] = {}
        self.inputs: dict[str, list[int] | None] | None = None
        self.pending: set[str] = set()
        BuildReporter.last = self

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        """Remember what was asked for and, for a complete build, how its inputs were."""
        self.selected = list(selected_tasks)
        if set(self.selected) == set(DEFAULT_TASKS):
            self.inputs = begin(context().graph)
            # Every one of these must be seen done before the run may count as complete (an
            # interrupted run also ends with `complete_run`).
            self.pending = {name for name in tasks if name.split(":")[0] in DEFAULT_TASKS}

    def skip_uptodate(self, task: Any) -> None:
        """Nothing to print: the summary counts what was up to date."""
        self.pending.discard(task.name)

    def add_success(self, task: Any) -> None:
        """Nothing to print: the step printed its lines."""
        self.pending.discard(task.name)

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        """A step's failure was printed by its action; anything else gets one line here."""
        self.pending.discard(task.name)
        if isinstance(fail, UnmetDependency):
            self.unmet.append(task.name)
        elif isinstance(fail, TaskFailed):
            self.step_failures.append(task.name)
        else:
            line = _one_line(fail)
            self.other[task.name] = line
            self.write(f"ERROR {task.name}: {line}\n")
            if fail.traceback:  # an exception in an action is a bug: show where
                self.write(fail.get_msg())

    def only_step_failures(self) -> bool:
        """Whether every failure was a failed step or a task skipped because of one."""
        return not self.other and not self.runtime_errors

    def complete_run(self) -> None:
        """Print doit's own errors, then the summary; write the report and maybe the stamp."""
        if self.runtime_errors:
            self.write("Execution aborted.\n" + "\n".join(self.runtime_errors) + "\n")
        try:
            self._summarise()
        except (AneError, OSError) as exc:
            self.write(f"summary: cannot read the build records: {exc}\n")

    def _summarise(self) -> None:
        from .orphans import find_orphans
        from .summary import collect, split_lines, summary_lines, write_report

        ctx = context()
        states = collect(ctx, self.other)
        for line in (*summary_lines(states), *split_lines(ctx, states)):
            self.write(line + "\n")
        orphans = find_orphans(ctx)
        if orphans:
            count = sum(len(paths) for paths in orphans.values())
            self.write(
                f"{count} output(s) of removed or renamed configs remain "
                f"({', '.join(orphans)}); `doit clean orphans` removes them\n"
            )
        paths = sorted(ctx.rel(p) for ps in orphans.values() for p in ps)
        write_report(ctx, states, paths)
        failed = self.step_failures or self.unmet or self.other or self.runtime_errors
        if not failed and not self.pending and self.inputs is not None:
            write_stamp(ctx.graph, self.inputs)


def _one_line(fail: BaseFail) -> str:
    """The first line of doit's message, in our words where we know them."""
    message = str(fail.get_msg()).strip() or str(fail.get_name())
    for line in message.splitlines():
        if "Dependent file" in line and "does not exist" in line:
            path = line.split("'")[-2] if line.count("'") >= 2 else line
            return f"input {context().rel(path)} does not exist"
    return message.splitlines()[0]
