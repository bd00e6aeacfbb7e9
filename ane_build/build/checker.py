"""`FingerprintChecker`: doit's file checker backed by our digest cache.

Its class name is stored in doit's state: renaming it would make every existing project rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from doit.dependency import FileChangedChecker

from .context import context
from .state import FileState


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
