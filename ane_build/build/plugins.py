"""doit's state backend for ane_build projects, registered through an entry point.

It commits each task's state as soon as doit records it, so a killed run keeps what it finished.
The ``why`` and ``watch`` doit commands live with the command line (`ane_build.cli`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from doit.dependency import SqliteDB

from .noop import invalidate

# doit's `save_success` writes a task's state key by key and writes "deps:" last; "ignore:" is
# written on its own by `doit ignore`. A commit on these keys stores each task's state whole.
_COMMIT_KEYS = frozenset({"deps:", "ignore:"})


class WriteThroughSqliteDB(SqliteDB):  # type: ignore[misc]
    """doit's sqlite3 backend, but each task's state is committed as soon as doit has recorded it.

    Plain doit writes its state only when a run ends: a run killed after building 50 models
    forgets all 50 and rebuilds them. The commit happens once a task's state is complete (WAL, so
    commits are cheap), never half-way through it; anything else doit sets is committed when the
    run ends, as plain doit does.
    """

    desc = "sqlite3, committed after every task (ane_build)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        # doit opens its state before loading tasks, so our state folder may not exist yet.
        os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
        super().__init__(name, codec, module_name=module_name)
        self._conn.execute("pragma journal_mode=wal")
        self._conn.execute("pragma synchronous=normal")
        self._conn.execute("pragma busy_timeout=60000")
        # The state lives in <project>/.ane_build/, beside the no-op stamp.
        self._project = Path(os.path.abspath(name)).parent.parent
        self._stamp_valid = True

    def _changed(self) -> None:
        """Note that doit's state changes: the no-op stamp no longer describes it."""
        if self._stamp_valid:
            invalidate(self._project)
            self._stamp_valid = False

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        """Store; commit when the task's state is complete."""
        self._changed()
        super().set(task_id, dependency, value)
        if dependency not in _COMMIT_KEYS:
            return
        self._conn.execute(
            "insert or replace into doit values (?,?)",
            (task_id, self.codec.encode(self._cache[task_id])),
        )
        self._conn.commit()
        self._dirty.discard(task_id)

    def remove(self, task_id: str) -> None:
        """Remove and commit."""
        self._changed()
        super().remove(task_id)
        self._conn.commit()

    def remove_all(self) -> None:
        """Remove everything and commit."""
        self._changed()
        super().remove_all()
        self._conn.commit()
