"""The kernel's verdict, and how a refusal travels inside the parser."""

from __future__ import annotations

from dataclasses import dataclass
from errno import EINVAL
from typing import TypeAlias

from ...errors import KernelRejection, KernelVerdictView

# The same as ``_typing.BytesLike``; spelled out so this package imports nothing else.
Buffer: TypeAlias = bytes | bytearray | memoryview


@dataclass(frozen=True)
class KernelVerdict:
    """What the fork kernel does with a BO on an ONNX-flag submit.

    Attributes:
        errno: 0, ``errno.EINVAL`` or ``errno.ERANGE``.
        stage: ``"translate"`` (the parser) or ``"submit"`` (the fit check); ``""`` when OK.
        rule: A short stable id of the deciding rule (``"truncated-tag"``, ``"base64"``, ...);
            ``""`` when OK.
        detail: One sentence with the offsets and values involved.
        offset: The BO offset of the deciding problem, when there is one.
        tsk_size: The microcode length, written back as ``tsk_size``; 0 on failure.
        td_size: Written back as ``td_size``; 0 on failure.
        td_count: Written back as ``td_count``; 0 on failure.
        weights_len: The decoded weights length; 0 on failure.
        microcode_sha256: Digest of the decoded microcode; None on failure.
        weights_sha256: Digest of the decoded weights (of b"" when absent); None on failure.
    """

    errno: int
    stage: str
    rule: str
    detail: str
    offset: int | None = None
    tsk_size: int = 0
    td_size: int = 0
    td_count: int = 0
    weights_len: int = 0
    microcode_sha256: str | None = None
    weights_sha256: str | None = None

    @property
    def ok(self) -> bool:
        """True when the kernel accepts the BO."""
        return self.errno == 0


def refuse(
    rule: str, detail: str, offset: int | None, errno: int = EINVAL, stage: str = "translate"
) -> KernelRejection:
    """The exception that carries a refusal out of the parser's depths."""
    return KernelRejection(KernelVerdict(errno, stage, rule, detail, offset))


def refused(verdict: KernelVerdictView) -> KernelVerdict:
    """A failed verdict from what a `KernelRejection` carries (its sizes are all zero)."""
    return KernelVerdict(verdict.errno, verdict.stage, verdict.rule, verdict.detail, verdict.offset)
