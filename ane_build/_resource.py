"""`Closing`: context-manager support for resources whose ``close()`` is idempotent.

Definitions only; it must not import anything from the package.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Context-manager support for resources with an idempotent ``close()``."""

    def close(self) -> None:
        """Release the resource."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
