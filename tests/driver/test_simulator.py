import base64
import errno
import mmap
from pathlib import Path

import pytest

from ane_build.driver import uapi
from ane_build.driver.simulator import SimulatedKernel
from ane_build.driver.uapi import ANE_ADDRESS_SPACE, PAGE_SIZE
from ane_build.formats.microcode import build_bootstrap
from ane_build.formats.protowire import encode_len_header, encode_varint
from ane_build.synthetic.chains import make_chain, make_weights
from tests.helpers import encode_entry

MICROCODE = make_chain(2, seed=3)
TD = 0x274


class Raw:
    """Drive the simulated kernel with raw structs, as a C program would."""

    def __init__(self, abi: str = "fork", **kwargs: int) -> None:
        self.kernel = SimulatedKernel(abi=abi, **kwargs)  # type: ignore[arg-type]
        self.fd = self.kernel.open(self.kernel.ane_node)

    def bo_init(self, size: int, pad: int = 0) -> uapi.drm_ane_bo_init:
        req = uapi.drm_ane_bo_init(size=size, pad=pad)
        self.kernel.ioctl(self.fd, uapi.DRM_IOCTL_ANE_BO_INIT, req)
        return req

    def bo_free(self, handle: int, pad: int = 0) -> None:
        self.kernel.ioctl(self.fd, uapi.DRM_IOCTL_ANE_BO_FREE, uapi.drm_ane_bo_free(handle, pad))

    def write(self, req: uapi.drm_ane_bo_init, data: bytes) -> None:
        with self.kernel.mmap(self.fd, req.size, req.offset) as m:
            m[: len(data)] = data

    def program(self) -> tuple[uapi.drm_ane_bo_init, uapi.drm_ane_bo_init]:
        cmd, btsp = self.bo_init(len(MICROCODE) + 1), self.bo_init(TD)
        self.write(cmd, MICROCODE)
        self.write(btsp, build_bootstrap(MICROCODE, TD))
        return cmd, btsp

    def submit(self, **fields: int) -> uapi.drm_ane_submit:
        handles = fields.pop("handles", {})
        req = uapi.drm_ane_submit(**fields)
        for slot, handle in handles.items():  # type: ignore[attr-defined]
            req.handles[slot] = handle
        self.kernel.ioctl(self.fd, uapi.DRM_IOCTL_ANE_SUBMIT, req)
        return req


def _errno(call, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        call(*args, **kwargs)
    return info.value.errno


def test_bo_init_rounds_to_pages_and_counts() -> None:
    raw = Raw()
    req = raw.bo_init(1)
    assert req.size == PAGE_SIZE and req.handle == 1 and req.offset % PAGE_SIZE == 0
    assert raw.bo_init(PAGE_SIZE + 1).size == 2 * PAGE_SIZE
    assert raw.kernel.live_bos == 2
    assert raw.kernel.address_space_used == 3 * PAGE_SIZE
    assert raw.kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == 2


def test_bo_init_rules() -> None:
    raw = Raw(address_space=4 * PAGE_SIZE, memory_limit=2 * PAGE_SIZE)
    assert _errno(raw.bo_init, 0) == errno.EINVAL
    assert _errno(raw.bo_init, 1, pad=1) == errno.EINVAL
    assert _errno(raw.bo_init, 3 * PAGE_SIZE) == errno.ENOMEM
    raw.bo_init(2 * PAGE_SIZE)
    raw.bo_init(2 * PAGE_SIZE)
    assert _errno(raw.bo_init, 1) == errno.ENOSPC
    assert raw.kernel.live_bos == 2


def test_default_address_space_is_about_3_5_gib() -> None:
    assert ANE_ADDRESS_SPACE == 0xE000_0000
    raw = Raw()
    big = raw.bo_init(ANE_ADDRESS_SPACE)  # memfd pages are lazy: this costs nothing
    assert _errno(raw.bo_init, 1) == errno.ENOSPC
    raw.bo_free(big.handle)
    raw.bo_init(1)


def test_double_free_and_unknown_handle() -> None:
    raw = Raw()
    req = raw.bo_init(1)
    raw.bo_free(req.handle)
    assert _errno(raw.bo_free, req.handle) == errno.EINVAL
    assert _errno(raw.bo_free, 999) == errno.EINVAL
    other = raw.bo_init(1)
    assert _errno(raw.bo_free, other.handle, pad=1) == errno.EINVAL
    assert raw.kernel.live_bos == 1


def test_mmap_bounds_and_sharing() -> None:
    raw = Raw()
    req = raw.bo_init(2 * PAGE_SIZE)
    assert _errno(raw.kernel.mmap, raw.fd, req.size + PAGE_SIZE, req.offset) == errno.EINVAL
    assert _errno(raw.kernel.mmap, raw.fd, PAGE_SIZE, req.offset + PAGE_SIZE) == errno.EINVAL
    assert _errno(raw.kernel.mmap, raw.fd, 0, req.offset) == errno.EINVAL
    a = raw.kernel.mmap(raw.fd, req.size, req.offset)
    b = raw.kernel.mmap(raw.fd, PAGE_SIZE, req.offset)
    a[5:8] = b"abc"
    assert b[5:8] == b"abc"
    assert raw.kernel.bytes_mapped == 3 * PAGE_SIZE
    a.close()
    b.close()
    raw.bo_free(req.handle)
    assert raw.kernel.freed_while_mapped == 0


def test_free_while_mapped_is_counted() -> None:
    raw = Raw()
    req = raw.bo_init(1)
    mapping: mmap.mmap = raw.kernel.mmap(raw.fd, req.size, req.offset)
    raw.bo_free(req.handle)
    assert raw.kernel.freed_while_mapped == 1
    mapping[0] = 1  # the pages stay valid while mapped, as with the kernel
    mapping.close()


def test_closing_the_fd_leaks_bos_like_the_stock_driver() -> None:
    raw = Raw()
    raw.bo_init(1)
    raw.kernel.close(raw.fd)
    assert raw.kernel.open_fds == 0
    assert raw.kernel.live_bos == 1
    assert _errno(raw.kernel.close, raw.fd) == errno.EBADF
    assert _errno(raw.bo_init, 1) == errno.EBADF


def test_a_valid_submit_runs() -> None:
    raw = Raw("stock")
    cmd, btsp = raw.program()
    raw.submit(
        tsk_size=len(MICROCODE),
        td_count=2,
        td_size=TD,
        handles={0: cmd.handle},
        btsp_handle=btsp.handle,
    )
    assert len(raw.kernel.submits) == 1
    assert raw.kernel.submits[0].handles[0] == cmd.handle


@pytest.mark.parametrize(
    ("abi", "change"),
    [
        ("stock", {"pad": 1}),
        ("fork", {"pad": 2}),
        ("fork", {"tsk_size": 0}),
        ("fork", {"td_count": 0}),
        ("fork", {"td_size": 0}),
        ("fork", {"handles": {}}),
        ("fork", {"slot1": True}),
        ("fork", {"btsp_handle": 0}),
        ("fork", {"btsp_handle": 77}),
        ("fork", {"dead_slot": 5}),
        ("fork", {"tsk_size": PAGE_SIZE}),
        ("fork", {"tsk_size": PAGE_SIZE + 1}),
    ],
)
def test_every_submit_einval_rule(abi: str, change: dict[str, object]) -> None:
    raw = Raw(abi)
    cmd, btsp = raw.program()
    extra = raw.bo_init(1)
    fields: dict[str, object] = {
        "tsk_size": len(MICROCODE),
        "td_count": 2,
        "td_size": TD,
        "handles": {0: cmd.handle},
        "btsp_handle": btsp.handle,
    }
    if change.pop("slot1", False):
        fields["handles"] = {0: cmd.handle, 1: extra.handle}
    if "dead_slot" in change:
        fields["handles"] = {0: cmd.handle, change.pop("dead_slot"): 4242}
    fields.update(change)
    assert _errno(raw.submit, **fields) == errno.EINVAL
    assert raw.kernel.submits == []


@pytest.mark.parametrize(
    "breakage", ["td_count", "td_size", "bootstrap_zero", "bootstrap_nid", "chain_loop"]
)
def test_hangs_time_out(breakage: str) -> None:
    raw = Raw()
    cmd, btsp = raw.program()
    fields = {
        "tsk_size": len(MICROCODE),
        "td_count": 2,
        "td_size": TD,
        "handles": {0: cmd.handle},
        "btsp_handle": btsp.handle,
    }
    if breakage == "td_count":
        fields["td_count"] = 1
    elif breakage == "td_size":
        fields["td_size"] = 0x270
    elif breakage == "bootstrap_zero":
        raw.write(btsp, bytes(TD))
    elif breakage == "bootstrap_nid":
        raw.write(btsp, MICROCODE[:TD])
    else:
        bad = bytearray(MICROCODE)
        bad[0x1C:0x20] = (0).to_bytes(4, "little")
        raw.write(cmd, bytes(bad))
    assert _errno(raw.submit, **fields) == errno.ETIMEDOUT


def test_fault_injection_hits_the_nth_call_once() -> None:
    raw = Raw()
    raw.kernel.inject_fault("BO_INIT", errno.ENOMEM, nth=2)
    raw.bo_init(1)
    assert _errno(raw.bo_init, 1) == errno.ENOMEM
    raw.bo_init(1)
    assert raw.kernel.live_bos == 2
    with pytest.raises(ValueError, match="unknown operation"):
        raw.kernel.inject_fault("BO_EXPLODE", errno.EIO)


# -- the fork's ONNX translation ---------------------------------------------------------


def container(
    entries: list[tuple[bytes, bytes]], graph: bytes = b"\x0a\x01x", *, even: bool = True
) -> bytes:
    """A container with these entries; of even length (as our writer makes them) by default."""
    out = encode_varint(1 << 3) + encode_varint(8)
    out += encode_len_header(7, len(graph)) + graph
    for key, value in entries:
        body = encode_entry(key, value)
        out += encode_len_header(14, len(body)) + body
    if even and len(out) % 2:
        out += encode_varint(15 << 3) + encode_varint(300)  # an unknown varint field: 3 bytes
    return out


def ane_entries(
    microcode: bytes = MICROCODE,
    weights: bytes = b"",
    *,
    urlsafe: bool = False,
    td_size: bytes = b"628",
    td_count: bytes = b"2",
) -> list[tuple[bytes, bytes]]:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    entries = [
        (b"ane.microcode.b64", enc(microcode)),
        (b"ane.td_size", td_size),
        (b"ane.td_count", td_count),
    ]
    if weights:
        entries.append((b"ane.weights.b64", enc(weights)))
    return entries


def submit_container(raw: Raw, data: bytes, bo_size: int | None = None) -> uapi.drm_ane_submit:
    cmd = raw.bo_init(bo_size or len(data) + 1)
    btsp = raw.bo_init(TD)
    raw.write(cmd, data)
    raw.write(btsp, build_bootstrap(MICROCODE, TD))
    return raw.submit(
        tsk_size=1,
        td_count=1,
        td_size=4,
        handles={0: cmd.handle},
        btsp_handle=btsp.handle,
        pad=uapi.ANE_SUBMIT_FLAG_ONNX,
    )


def test_onnx_translation_in_place() -> None:
    raw = Raw()
    weights = make_weights(3000, seed=1)
    # Weights whose base64 holds '+' and '/' in one alphabet and '-' and '_' in the other.
    for urlsafe in (False, True):
        data = container([(b"foreign", b"kept"), *ane_entries(weights=weights, urlsafe=urlsafe)])
        req = submit_container(raw, data)
        assert (req.tsk_size, req.td_size, req.td_count) == (len(MICROCODE), TD, 2)
        image = raw.kernel.bo_bytes(req.handles[0])
        pad = -len(MICROCODE) % 16
        assert image[: len(MICROCODE)] == MICROCODE
        assert image[len(MICROCODE) : len(MICROCODE) + pad] == bytes(pad)
        assert image[len(MICROCODE) + pad : len(MICROCODE) + pad + len(weights)] == weights
        assert raw.kernel.submits[-1].onnx_translated


def test_onnx_base64_whitespace_is_skipped() -> None:
    raw = Raw()
    text = base64.b64encode(MICROCODE)
    wrapped = b"\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + b"\r\n"
    entries = [(b"ane.microcode.b64", wrapped), (b"ane.td_size", b"628"), (b"ane.td_count", b"2")]
    submit_container(raw, container(entries))


@pytest.mark.parametrize("key_len", [63, 64])
def test_onnx_key_limit_applies_to_foreign_keys(key_len: int) -> None:
    raw = Raw()
    data = container([(b"k" * key_len, b"v"), *ane_entries()])
    if key_len < 64:
        submit_container(raw, data)
    else:
        assert _errno(submit_container, raw, data) == errno.EINVAL


@pytest.mark.parametrize(
    "entries",
    [
        ane_entries()[1:],  # no microcode
        [(b"ane.microcode.b64", b""), *ane_entries()[1:]],
        [(b"ane.microcode.b64", b"!!!!"), *ane_entries()[1:]],
        ane_entries(td_size=b"0"),
        ane_entries(td_count=b"0x2"),
        ane_entries(td_count=b"-2"),
        ane_entries(td_size=b"1" * 32),
        ane_entries(td_size=b""),
        ane_entries()[:2],  # no td_count
    ],
)
def test_onnx_translation_einval(entries: list[tuple[bytes, bytes]]) -> None:
    assert _errno(submit_container, Raw(), container(entries)) == errno.EINVAL


def test_onnx_odd_container_is_einval_unless_the_tail_is_evened() -> None:
    data = container(ane_entries(), even=False)
    assert len(data) % 2 == 1
    assert _errno(submit_container, Raw(), data) == errno.EINVAL
    # The same bytes with "00 80 00" after them: one field-0 varint, then pairs of zeros.
    submit_container(Raw(), data + b"\x00\x80\x00")


def test_onnx_weights_ending_at_an_early_pad_are_accepted() -> None:
    # The kernel stops at the first '=': "A" alone leaves 6 bits, which it drops.
    raw = Raw()
    req = submit_container(raw, container([*ane_entries(), (b"ane.weights.b64", b"A===")]))
    assert req.tsk_size == len(MICROCODE) and raw.kernel.submits[-1].onnx_translated


def test_onnx_flag_on_stock_abi() -> None:
    assert _errno(submit_container, Raw("stock"), container(ane_entries())) == errno.EINVAL


def test_version_reports_lengths_and_truncates() -> None:
    import ctypes

    raw = Raw()
    name = ctypes.create_string_buffer(2)
    ver = uapi.drm_version(name_len=2, name=ctypes.addressof(name))
    raw.kernel.ioctl(raw.fd, uapi.DRM_IOCTL_VERSION, ver)
    assert ver.name_len == 3 and name.raw == b"an"
    ver = uapi.drm_version(name_len=4, name=None)
    assert _errno(raw.kernel.ioctl, raw.fd, uapi.DRM_IOCTL_VERSION, ver) == errno.EFAULT


@pytest.mark.parametrize(("tail", "ok"), [(bytes(12), True), (b"\x00" * 11 + b"\x01", False)])
def test_zero_padding_after_the_chain_runs(tail: bytes, ok: bool) -> None:
    raw = Raw()
    microcode = make_chain(1) + tail
    cmd, btsp = raw.bo_init(len(microcode) + 1), raw.bo_init(TD)
    raw.write(cmd, microcode)
    raw.write(btsp, build_bootstrap(microcode, TD))
    fields = {
        "tsk_size": len(microcode),
        "td_count": 1,
        "td_size": TD,
        "handles": {0: cmd.handle},
        "btsp_handle": btsp.handle,
    }
    if ok:
        raw.submit(**fields)
    else:
        assert _errno(raw.submit, **fields) == errno.ETIMEDOUT


def test_the_kernel_works_through_a_live_user_mapping_instead_of_its_own() -> None:
    # A second mapping of the same pages would count them twice in the process's RSS.
    raw = Raw()
    weights = make_weights(3000, seed=2)
    data = container(ane_entries(weights=weights))
    cmd, btsp = raw.bo_init(len(data) + 1), raw.bo_init(TD)
    raw.write(btsp, build_bootstrap(MICROCODE, TD))
    with raw.kernel.mmap(raw.fd, cmd.size, cmd.offset) as whole:
        whole[: len(data)] = data
        req = raw.submit(
            tsk_size=1,
            td_count=1,
            td_size=TD,
            handles={0: cmd.handle},
            btsp_handle=btsp.handle,
            pad=uapi.ANE_SUBMIT_FLAG_ONNX,
        )
        at = len(MICROCODE) + -len(MICROCODE) % 16
        assert whole[at : at + len(weights)] == weights and req.tsk_size == len(MICROCODE)
        # Only the bootstrap BO, written through a mapping closed before the submit, needed one.
        assert raw.kernel.own_mappings == 1
    assert raw.kernel.bo_bytes(cmd.handle)[at : at + len(weights)] == weights
    assert raw.kernel.own_mappings == 2
    raw.bo_free(cmd.handle)
    raw.bo_free(btsp.handle)
    assert raw.kernel.own_mappings == 0


def test_a_translated_program_loads_its_graph_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import onnxruntime as ort

    from ane_build import AneModel
    from ane_build.driver.device import ANEDevice
    from tests.helpers import graph_model, io_slots, synthetic_container

    shape = (1, 2, 3, 4)
    source = graph_model(tmp_path / "m.onnx", [("Neg", "y")], shape)
    container = synthetic_container(source, tmp_path / "m_ane.onnx", io_slots(["x"], ["y"], shape))
    made = []
    real = ort.InferenceSession

    def counting(*args: object, **kwargs: object) -> object:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    x = np.arange(24, dtype=np.float16).reshape(shape)
    with ANEDevice.simulated() as dev, AneModel.load(dev, container) as model:
        outs = [model.run({"x": x + i})["y"] for i in range(20)]
    assert len(made) == 1
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, -(x + i))
