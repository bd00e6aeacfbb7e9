"""What reading and verifying a container returns: metadata, payloads, verification reports.

Value types only; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from ..errors import (
    VerificationError,
)
from ..formats.payload import IoSlot
from .keys import KEY_WEIGHTS


class AneModelMetadata(BaseModel):
    """The ``ane.*`` metadata of a container, read without decoding the payloads.

    Payload lengths are computed from the base64 text length and its padding; digests are the
    stated ones (`verify_container` checks them against the payloads).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    file_size: int
    has_graph: bool
    microcode_len: int
    weights_len: int
    tile_descriptors_len: int
    td_size: int
    td_count: int
    format: str | None = None
    toolchain: str | None = None
    io: dict[int, IoSlot] = {}
    tiles: dict[int, int] = {}
    microcode_sha256: str | None = None
    weights_sha256: str | None = None
    tile_descriptors_sha256: str | None = None
    source_sha256: str | None = None
    keys: tuple[str, ...] = ()
    foreign_keys: tuple[str, ...] = ()

    @property
    def has_weights(self) -> bool:
        """Whether the container carries an ``ane.weights.b64`` entry."""
        return KEY_WEIGHTS in self.keys


@dataclass(frozen=True)
class AnePayloads:
    """Decoded payloads of a container; empty bytes for an absent optional payload."""

    microcode: bytes
    weights: bytes = b""
    tile_descriptors: bytes = b""


@dataclass(frozen=True)
class Check:
    """One verification rule and its outcome; a failed warning does not fail the report."""

    name: str
    ok: bool
    detail: str = ""
    warning: bool = False

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``WARN``."""
        return "PASS" if self.ok else "WARN" if self.warning else "FAIL"


@dataclass
class VerifyReport:
    """Outcome of `verify_container`: every rule checked, in order.

    Attributes:
        path: The container (``<bytes>`` for in-memory data).
        checks: One entry per rule that could be evaluated.
        metadata: The parsed metadata, when it could be parsed.
    """

    path: str
    checks: list[Check] = field(default_factory=list)
    metadata: AneModelMetadata | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed or only warned (and there was at least one)."""
        return bool(self.checks) and not self.failures

    @property
    def failures(self) -> list[Check]:
        """The checks that failed (warnings excluded)."""
        return [check for check in self.checks if not check.ok and not check.warning]

    @property
    def warnings(self) -> list[Check]:
        """The checks that warned."""
        return [check for check in self.checks if not check.ok and check.warning]

    def add(self, name: str, ok: bool, detail: str = "", *, warning: bool = False) -> None:
        """Record one check."""
        self.checks.append(Check(name, ok, detail, warning))

    def summary(self) -> str:
        """Render the report: a header line, then one PASS/FAIL/WARN line per check."""
        failed, warned = len(self.failures), len(self.warnings)
        head = "OK" if self.ok else f"FAILED ({failed} of {len(self.checks)} checks)"
        if warned:
            head += f", {warned} warning(s)"
        lines = [f"{self.path}: {head}"]
        lines += [
            f"{check.status} {check.name}" + (f": {check.detail}" if check.detail else "")
            for check in self.checks
        ]
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise `ContainerVerificationError` listing the failed checks, if any failed.

        Raises:
            ContainerVerificationError: At least one check failed.
        """
        if not self.ok:
            raise ContainerVerificationError(self)


class ContainerVerificationError(VerificationError):
    """A container failed `verify_container`; ``report`` holds every check."""

    def __init__(self, report: VerifyReport) -> None:
        lines = [f"  {check.name}: {check.detail}" for check in report.failures]
        if not report.checks:
            lines = ["  nothing could be checked"]
        super().__init__(f"{report.path}: container verification failed:\n" + "\n".join(lines))
        self.report = report
