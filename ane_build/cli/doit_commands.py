"""doit commands, registered through doit's COMMAND entry point: why, watch, run and forget.

``why`` and ``watch`` are thin front-ends over the same code as ``python -m ane_build why|watch``.
``run`` and ``forget`` extend doit's own commands (entry points override the built-in ones, for
every project in the environment): for a project that is not an ane_build project they do
exactly what doit's do. Nothing else lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.cmd_base import Command
from doit.cmd_forget import Forget
from doit.cmd_run import Run

from .project import PROJECT_HELP, WATCH_FLAGS

# Options that do not change what a no-op run decides (the rest, when given, disable the
# fast path: a chosen reporter, dependency file, checker, -a, --single...).
_NOOP_NEUTRAL = frozenset(
    {"num_process", "par_type", "verbosity", "continue", "failure_verbosity", "pdb", "outfile"}
)


class WhyCommand(Command):  # type: ignore[misc]
    """``doit why [MODEL...]``: say why each model would be rebuilt, without building."""

    name = "why"
    doc_purpose = "explain why models would be rebuilt (builds nothing)"
    doc_usage = "[MODEL ...]"

    def execute(self, params: Any, args: list[str]) -> int:
        """Print reasons; exit 0."""
        from .app import main

        return main(["why", *args])


class WatchCommand(Command):  # type: ignore[misc]
    """``doit watch``: rebuild affected models whenever their inputs change."""

    name = "watch"
    doc_purpose = "watch inputs and rebuild affected models (Ctrl-C to stop)"
    doc_usage = " ".join(f"[--{flag}]" for flag, _ in WATCH_FLAGS) + " [--project DIR]"
    cmd_options = (
        *(
            {
                "name": flag.replace("-", "_"),
                "long": flag,
                "type": bool,
                "default": False,
                "help": text,
            }
            for flag, text in WATCH_FLAGS
        ),
        {"name": "project", "long": "project", "type": str, "default": "", "help": PROJECT_HELP},
    )

    def execute(self, params: Any, args: list[str]) -> int:
        """Run the watch loop until Ctrl-C."""
        flags = [f"--{flag}" for flag, _ in WATCH_FLAGS if params[flag.replace("-", "_")]]
        if params["project"]:
            flags += ["--project", params["project"]]
        from .app import main

        return main(["watch", *flags, *args])


class RunCommand(Run):  # type: ignore[misc]
    """doit's ``run`` (plain ``doit``) with ane_build's no-op fast path and keep-going status.

    Before doit loads any task definition, an unchanged ane_build project is reported up to date
    from its no-op stamp (see `ane_build.build.noop`). A run whose only failures are failed
    steps (and the steps after them, which doit then skips with an "unmet dependency" error)
    exits 1 like any failed build, not 2.
    """

    name = "run"

    def execute(self, params: Any, args: list[str]) -> int:
        """Run the tasks, or report a no-op without loading them."""
        from ..build.context import set_always
        from ..build.reporter import BuildReporter

        set_always(bool(params.get("always")))
        if not args and self._neutral(params):
            count = _noop_count(params)
            if count is not None:
                from ..build.summary import all_up_to_date

                out = params.get("outfile")
                print(all_up_to_date(count), file=out if hasattr(out, "write") else None)
                return 0
        BuildReporter.last = None
        code = int(super().execute(params, args))
        reporter = BuildReporter.last
        if code == 2 and reporter is not None and reporter.only_step_failures():
            return 1
        return code

    def _neutral(self, params: Any) -> bool:
        """Whether every option that could change the outcome has its default value."""
        return all(
            opt.name in _NOOP_NEUTRAL or params.get(opt.name) == opt.default
            for opt in self.get_options()
        )


def _noop_count(params: Any) -> int | None:
    """The model count when the project's no-op stamp holds, else None."""
    from ..build.noop import check_stamp

    folder = Path(params.get("cwdPath") or ".")
    dodo = folder / (params.get("dodoFile") or "dodo.py")
    if not dodo.is_file():
        return None
    return check_stamp(dodo.resolve().parent)


class ForgetCommand(Forget):  # type: ignore[misc]
    """doit's ``forget``, which also drops the build records of what it forgets.

    Without them a step whose output is intact would be kept "per its build record"; forgetting
    a task means it is rebuilt, as doit promises.
    """

    name = "forget"

    def _execute(self, forget_sub: bool, forget_disable_default: bool, forget_all: bool) -> Any:
        """Forget in doit's state and in our records."""
        from ..build.layout import find_project_root
        from ..build.state import forget
        from ..errors import AneError

        try:
            root = find_project_root(Path.cwd())
        except AneError:
            return super()._execute(forget_sub, forget_disable_default, forget_all)
        remove, remove_all = self.dep_manager.remove, self.dep_manager.remove_all

        def remove_one(task_id: str) -> None:
            remove(task_id)
            forget(root, task_id)

        def remove_every() -> None:
            remove_all()
            forget(root, None)

        self.dep_manager.remove, self.dep_manager.remove_all = remove_one, remove_every
        return super()._execute(forget_sub, forget_disable_default, forget_all)
