"""Type aliases shared across the package; definitions only, no runtime behaviour."""

from __future__ import annotations

import os
from typing import TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview
StrPath: TypeAlias = str | os.PathLike[str]
