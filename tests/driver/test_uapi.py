import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from ane_build.driver import uapi

PINNED = {
    "DRM_IOCTL_ANE_BO_INIT": (uapi.drm_ane_bo_init, 24, 0xC0186441),
    "DRM_IOCTL_ANE_BO_FREE": (uapi.drm_ane_bo_free, 8, 0xC0086442),
    "DRM_IOCTL_ANE_SUBMIT": (uapi.drm_ane_submit, 152, 0xC0986443),
    "DRM_IOCTL_VERSION": (uapi.drm_version, 64, 0xC0406400),
    "DRM_IOCTL_GEM_CLOSE": (uapi.drm_gem_close, 8, 0x40086409),
}

OFFSETS = {
    uapi.drm_ane_bo_init: {"handle": 0, "pad": 4, "size": 8, "offset": 16},
    uapi.drm_ane_bo_free: {"handle": 0, "pad": 4},
    uapi.drm_ane_submit: {
        "tsk_size": 0,
        "td_count": 8,
        "td_size": 12,
        "handles": 16,
        "btsp_handle": 144,
        "pad": 148,
    },
    uapi.drm_version: {
        "version_major": 0,
        "version_minor": 4,
        "version_patchlevel": 8,
        "name_len": 16,
        "name": 24,
        "date_len": 32,
        "date": 40,
        "desc_len": 48,
        "desc": 56,
    },
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_ioctl_numbers_and_sizes_are_pinned(name: str) -> None:
    struct, size, number = PINNED[name]
    assert ctypes.sizeof(struct) == size
    assert getattr(uapi, name) == number
    assert uapi.IOCTL_NAMES[number] == name


@pytest.mark.parametrize("struct", list(OFFSETS), ids=lambda s: s.__name__)
def test_field_offsets(struct: type[ctypes.Structure]) -> None:
    assert {f: getattr(struct, f).offset for f in OFFSETS[struct]} == OFFSETS[struct]


def test_constants() -> None:
    assert (uapi.ANE_TILE_COUNT, uapi.ANE_FIFO_NID, uapi.ANE_CMD_GRAN) == (32, 0x40, 16)
    assert uapi.ANE_SUBMIT_FLAG_ONNX == 1
    assert len(uapi.drm_ane_submit().handles) == uapi.ANE_TILE_COUNT


def test_uapi_imports_only_the_standard_library() -> None:
    source = Path(uapi.__file__).read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "import ctypes"]


C_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/types.h>
#include <linux/ioctl.h>

#define ANE_TILE_COUNT 32
struct drm_ane_bo_init { __u32 handle; __u32 pad; __u64 size; __u64 offset; };
struct drm_ane_bo_free { __u32 handle; __u32 pad; };
struct drm_ane_submit {
    __u64 tsk_size; __u32 td_count; __u32 td_size;
    __u32 handles[ANE_TILE_COUNT]; __u32 btsp_handle; __u32 pad;
};
struct drm_version {
    int version_major; int version_minor; int version_patchlevel;
    size_t name_len; char *name; size_t date_len; char *date; size_t desc_len; char *desc;
};
struct drm_gem_close { __u32 handle; __u32 pad; };
#define DRM_IOCTL_BASE 'd'
#define DRM_COMMAND_BASE 0x40

#define F(s, m) printf(#s "." #m " %zu\n", offsetof(struct s, m))
#define P(name, value) printf(name " %lu\n", (unsigned long)(value))
int main(void) {
    P("DRM_IOCTL_ANE_BO_INIT",
      _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 1, struct drm_ane_bo_init));
    P("DRM_IOCTL_ANE_BO_FREE",
      _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 2, struct drm_ane_bo_free));
    P("DRM_IOCTL_ANE_SUBMIT",
      _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 3, struct drm_ane_submit));
    P("DRM_IOCTL_VERSION", _IOWR(DRM_IOCTL_BASE, 0x00, struct drm_version));
    P("DRM_IOCTL_GEM_CLOSE", _IOW(DRM_IOCTL_BASE, 0x09, struct drm_gem_close));
    printf("sizeof.drm_ane_bo_init %zu\n", sizeof(struct drm_ane_bo_init));
    printf("sizeof.drm_ane_bo_free %zu\n", sizeof(struct drm_ane_bo_free));
    printf("sizeof.drm_ane_submit %zu\n", sizeof(struct drm_ane_submit));
    printf("sizeof.drm_version %zu\n", sizeof(struct drm_version));
    F(drm_ane_bo_init, handle); F(drm_ane_bo_init, pad); F(drm_ane_bo_init, size);
    F(drm_ane_bo_init, offset);
    F(drm_ane_submit, tsk_size); F(drm_ane_submit, td_count); F(drm_ane_submit, td_size);
    F(drm_ane_submit, handles); F(drm_ane_submit, btsp_handle); F(drm_ane_submit, pad);
    F(drm_version, name_len); F(drm_version, name); F(drm_version, date_len);
    F(drm_version, date); F(drm_version, desc_len); F(drm_version, desc);
    return 0;
}
"""


def test_c_probe_agrees_with_python(tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler on this machine")
    src = tmp_path / "probe.c"
    src.write_text(C_PROBE)
    exe = tmp_path / "probe"
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    values = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    for name in PINNED:
        assert values[name] == getattr(uapi, name), name
    structs = {s.__name__: s for s in OFFSETS}
    for key, value in values.items():
        kind, _, member = key.partition(".")
        if kind == "sizeof":
            assert ctypes.sizeof(structs[member]) == value, key
        elif member:
            assert getattr(structs[kind], member).offset == value, key
