"""One run of one build step of one model: what it prints, and the outcome it leaves on disk.

Every action reports through a `Step`: its lines go to stdout (doit shows them in task order),
and its outcome (built, kept or failed, with the reasons, the one-line error and the time it
took) is written to ``.ane_build/outcomes/<model>.<step>.json``, tagged with the run's id. The
summary and ``build/report.json`` are read from those files, so they are right whatever process
ran the step (``doit -n``). This module must not import doit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import AneError
from .context import BuildContext
from .layout import build_version

BUILT, KEPT, FAILED = "built", "kept", "failed"


def say(line: str) -> None:
    """Report one line of an action's progress.

    doit shows what an action writes to stdout (verbosity 2) in task order, so this is the
    action's report channel, not a log: it is printed whatever the logging configuration.
    """
    print(line, flush=True)


@dataclass(frozen=True)
class StepFailed:
    """What an action returns when its step failed: one line naming the step and the reason."""

    message: str


class Step:
    """The report and the outcome of one step of one model in this run."""

    def __init__(self, ctx: BuildContext, step: str, name: str) -> None:
        self.ctx = ctx
        self.step = step
        self.name = name
        self.label = f"{step}:{name}"
        self.reasons: list[str] = []
        self._started = time.monotonic()

    def say(self, line: str) -> None:
        """Print one line, prefixed with the step's label."""
        say(f"{self.label}: {line}")

    def because(self, reasons: Iterable[str]) -> None:
        """Print and remember why the step runs."""
        self.reasons = list(reasons)
        for reason in self.reasons:
            self.say(reason)

    def done(self, status: str = BUILT, **extra: Any) -> None:
        """Record a successful outcome (``built`` or ``kept``)."""
        self._record(status, None, [], extra)

    def fail(self, error: str | AneError, details: Iterable[str] = ()) -> StepFailed:
        """Print the error, record the failure; return what the action returns to doit.

        The first line of ``error`` is the one-line reason the summary shows; the rest and
        ``details`` are printed under it and kept in the outcome.
        """
        first, *rest = str(error).splitlines() or ["failed"]
        more = [*rest, *details]
        self.say(f"error: {first}")
        for line in more:
            self.say(f"  {line}")
        self._record(FAILED, first, more, {})
        return StepFailed(f"{self.label}: {first}")

    def _record(self, status: str, error: str | None, details: list[str], extra: Any) -> None:
        outcome = {
            "run": self.ctx.run_id,
            "status": status,
            "reasons": self.reasons,
            "error": error,
            "details": details,
            "seconds": round(time.monotonic() - self._started, 4),
            "finished": time.time(),
            "version": build_version(),
            **extra,
        }
        self.ctx.outcomes.put(self.name, self.step, outcome)
