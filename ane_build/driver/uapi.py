"""Mirror of the ANE kernel ABI (``ane_accel.h`` plus the DRM core bits we use).

Names follow the kernel header one for one. Ioctl numbers are computed from ``ctypes.sizeof`` so a
wrong struct shows up as a wrong number in the pinned tests. Standard library only; no I/O here.
"""

from __future__ import annotations

import ctypes

ANE_TILE_COUNT = 32
ANE_FIFO_NID = 0x40
ANE_CMD_GRAN = 16
# Only the fork kernel knows this bit; the stock driver requires pad == 0.
ANE_SUBMIT_FLAG_ONNX = 1 << 0
ANE_SUBMIT_KNOWN_FLAGS = ANE_SUBMIT_FLAG_ONNX

# --- Kernel limits and hardware facts (DESIGN sections 3 and 5); not in the header ----------------

# BO_INIT rounds every size up to the kernel page (16 KiB on Asahi).
PAGE_SIZE = 16 * 1024
# ANE virtual address space shared by all BOs (about 3.5 GiB); BO_INIT fails beyond it.
ANE_ADDRESS_SPACE = 0xE000_0000
# Fork kernel ONNX parser: a metadata key of this many bytes or more is EINVAL.
ONNX_KEY_LIMIT = 64
# Fork kernel ONNX parser: a td_size/td_count value of this many bytes or more is EINVAL.
ONNX_NUMBER_LIMIT = 32
# The ABI carries td_count in a u32, but the engine's task counter is 16 bits wide.
TD_COUNT_LIMIT = 0x10000

# Task descriptor word layout (H13/M1). Word 0: task id 15:0, network id 23:16, end of network
# bit 25. Word 1 bits 24:16: size of the NEXT descriptor in 32-bit words minus one. Word 7: byte
# offset of the next descriptor from the start of the chain.
TD_WORD0_EON = 1 << 25
TD_NID_SHIFT = 16
TD_NID_MASK = 0xFF << TD_NID_SHIFT
TD_NEXT_SIZE_SHIFT = 16
TD_NEXT_SIZE_MASK = 0x1FF
TD_NEXT_OFFSET_WORD = 7
# Enough words to read every field above (word 7 is the last).
TD_MIN_SIZE = 4 * (TD_NEXT_OFFSET_WORD + 1)


def round_up(value: int, multiple: int) -> int:
    """The kernel's ``round_up()``: ``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


DRM_IOCTL_BASE = ord("d")
DRM_COMMAND_BASE = 0x40

DRM_ANE_BO_INIT = 0x01
DRM_ANE_BO_FREE = 0x02
DRM_ANE_SUBMIT = 0x03

# Asm-generic ioctl encoding (arm64 and x86_64 share it).
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:  # noqa: N802 - kernel name
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IOW(type_: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


class drm_ane_bo_init(ctypes.Structure):  # noqa: N801 - kernel name
    """Argument of DRM_IOCTL_ANE_BO_INIT: ``size`` in; ``handle`` and mmap ``offset`` out."""

    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    ]


class drm_ane_bo_free(ctypes.Structure):  # noqa: N801
    """Argument of DRM_IOCTL_ANE_BO_FREE."""

    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class drm_ane_submit(ctypes.Structure):  # noqa: N801
    """Argument of DRM_IOCTL_ANE_SUBMIT; ``pad`` carries the flags word on the fork kernel."""

    _fields_ = [
        ("tsk_size", ctypes.c_uint64),
        ("td_count", ctypes.c_uint32),
        ("td_size", ctypes.c_uint32),
        ("handles", ctypes.c_uint32 * ANE_TILE_COUNT),
        ("btsp_handle", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class drm_gem_close(ctypes.Structure):  # noqa: N801
    """Argument of DRM_IOCTL_GEM_CLOSE (mirrored for completeness; it does not free ANE BOs)."""

    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class drm_version(ctypes.Structure):  # noqa: N801
    """Argument of DRM_IOCTL_VERSION (LP64 layout); the string fields are user pointers."""

    _fields_ = [
        ("version_major", ctypes.c_int),
        ("version_minor", ctypes.c_int),
        ("version_patchlevel", ctypes.c_int),
        ("name_len", ctypes.c_size_t),
        ("name", ctypes.c_void_p),
        ("date_len", ctypes.c_size_t),
        ("date", ctypes.c_void_p),
        ("desc_len", ctypes.c_size_t),
        ("desc", ctypes.c_void_p),
    ]


DRM_IOCTL_VERSION = _IOWR(DRM_IOCTL_BASE, 0x00, drm_version)
DRM_IOCTL_GEM_CLOSE = _IOW(DRM_IOCTL_BASE, 0x09, drm_gem_close)
DRM_IOCTL_ANE_BO_INIT = _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_ANE_BO_INIT, drm_ane_bo_init)
DRM_IOCTL_ANE_BO_FREE = _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_ANE_BO_FREE, drm_ane_bo_free)
DRM_IOCTL_ANE_SUBMIT = _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_ANE_SUBMIT, drm_ane_submit)

IOCTL_NAMES: dict[int, str] = {
    DRM_IOCTL_VERSION: "DRM_IOCTL_VERSION",
    DRM_IOCTL_GEM_CLOSE: "DRM_IOCTL_GEM_CLOSE",
    DRM_IOCTL_ANE_BO_INIT: "DRM_IOCTL_ANE_BO_INIT",
    DRM_IOCTL_ANE_BO_FREE: "DRM_IOCTL_ANE_BO_FREE",
    DRM_IOCTL_ANE_SUBMIT: "DRM_IOCTL_ANE_SUBMIT",
}
