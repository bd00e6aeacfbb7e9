"""The ane_build error tree: every error this package raises derives from `AneError`.

This module defines exception types only; it must not import anything from the package.
"""

from __future__ import annotations

import errno as errno_mod
import os
from typing import Protocol


class AneError(Exception):
    """Base class of every error raised by ane_build."""


class AneDeviceError(AneError, OSError):
    """An ioctl, open or mmap on the device failed; keeps the errno and names the call.

    Attributes:
        errno: The errno the kernel (or simulator) returned.
        call: The failing call, e.g. ``"DRM_IOCTL_ANE_SUBMIT"`` or ``"mmap"``.
        path: The device node, when known.
    """

    def __init__(self, err: int, call: str, path: str | None = None, detail: str = "") -> None:
        name = errno_mod.errorcode.get(err, str(err))
        text = f"{call} failed: {name} ({os.strerror(err)})"
        if path:
            text += f" on {path}"
        if detail:
            text += f": {detail}"
        OSError.__init__(self, err, text)
        self.call = call
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


class DeviceNotFoundError(AneError):
    """No device node driven by the ``ane`` driver could be opened."""


class SubmitValidationError(AneError, ValueError):
    """A submit request failed userspace validation before reaching the kernel."""


class BufferObjectError(AneError):
    """A buffer object was used after close, or accessed out of its bounds."""


class InvalidArgumentError(AneError, ValueError):
    """A call with an argument outside what it accepts (a device spec, an ABI, a fault name)."""


class AneFormatError(AneError, ValueError):
    """Bytes that do not follow a format we read (protobuf, .anec, descriptor chain, JSON)."""


class WireFormatError(AneFormatError):
    """The protobuf wire encoding of an ONNX file is truncated or malformed."""


class KernelVerdictView(Protocol):
    """What a `KernelRejection` carries: a ``driver.kernel_onnx.KernelVerdict`` has these fields.

    Declared here as a protocol because this module imports nothing from the package.
    """

    @property
    def errno(self) -> int:
        """The errno the kernel returns: 0, ``EINVAL`` or ``ERANGE``."""

    @property
    def stage(self) -> str:
        """``"translate"`` (the parser) or ``"submit"`` (the fit check) decided."""

    @property
    def rule(self) -> str:
        """A short stable id of the rule that decided, e.g. ``"truncated-tag"``."""

    @property
    def detail(self) -> str:
        """One sentence with the offsets and values involved."""

    @property
    def offset(self) -> int | None:
        """The offset of the deciding problem, when there is one."""


class KernelRejection(AneFormatError):  # noqa: N818 - the name the driver API uses
    """Bytes the fork kernel's ONNX parser would refuse, with the kernel's verdict.

    Attributes:
        verdict: Why: errno, stage (``"translate"`` or ``"submit"``), rule id, detail, offset.
        errno: The errno the kernel returns (``EINVAL`` or ``ERANGE``).
    """

    def __init__(self, verdict: KernelVerdictView) -> None:
        name = errno_mod.errorcode.get(verdict.errno, str(verdict.errno))
        super().__init__(f"the kernel refuses this with {name} ({verdict.rule}): {verdict.detail}")
        self.verdict = verdict
        self.errno = verdict.errno


class Base64Error(KernelRejection):
    """Base64 text the kernel's decoder refuses.

    Attributes:
        offset: Where the first invalid byte is (in the text, or in the BO when scanning one).
    """

    def __init__(self, verdict: KernelVerdictView, offset: int) -> None:
        super().__init__(verdict)
        self.offset = offset


class DescriptorChainError(AneFormatError):
    """A task descriptor chain that breaks, loops, or disagrees with its stated parameters."""


class AnecFormatError(AneFormatError):
    """An ``.anec``/``.ane`` file whose header disagrees with itself or with the file."""


class MetadataError(AneFormatError):
    """``ane.*`` metadata that is present but invalid (bad base64, digest, number, JSON)."""


class MissingAneMetadataError(MetadataError):
    """A model lacks ``ane.*`` metadata keys that are required."""


class ContainerError(AneError):
    """A container that cannot be written safely (key too long, too large, broken external data)."""


class ArtifactError(AneError):
    """Compiler artefacts that are missing, ambiguous, unreadable or contradict each other."""


class ConfigError(AneError):
    """An invalid ``configs/*.toml`` file or project layout."""


class VerificationError(AneError):
    """A container failed verification; carries the report."""


class BuildError(AneError):
    """A build step failed; the message names the model and the step."""


class FileAccessError(AneError, OSError):
    """A file that cannot be opened, read or written; keeps the OS error's errno and cause.

    Attributes:
        errno: The errno of the OS error, when there was one.
    """

    def __init__(self, message: str, err: int | None = None) -> None:
        OSError.__init__(self, message)
        self.errno = err

    def __str__(self) -> str:
        return str(self.args[0])


class ModelFileError(FileAccessError):
    """An ONNX model file that cannot be opened, read or written."""


class InputError(AneError, ValueError):
    """Input tensors, test data or tolerances that do not fit a program or a graph.

    Names the input, what was expected and what was given.
    """


class ReferenceRunError(AneError):
    """Neither onnxruntime nor the ONNX reference evaluator could compute a reference output."""
