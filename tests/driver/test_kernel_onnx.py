"""The fork kernel's ONNX parser, rule by rule (the numbers of ane_build.driver.kernel_onnx).

Every container is built here, in code; every expected value is the kernel's verdict (DESIGN
section 3 and the kernel vectors), not what the old simulator did.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ane_build.driver.kernel_onnx import (
    KernelVerdict,
    b64,
    check_bo,
    decode_base64,
    parse_decimal,
    parse_entries,
    prepare_submit,
)
from ane_build.driver.kernel_onnx.b64 import CHUNK, decoded_length
from ane_build.driver.kernel_onnx.translate import check_fit
from ane_build.driver.kernel_onnx.verdict import Buffer
from ane_build.driver.uapi import PAGE_SIZE, round_up
from ane_build.errors import AneFormatError, Base64Error, InvalidArgumentError, KernelRejection

MICROCODE = bytes(range(1, 101))  # 100 bytes: the weights go at 112
WEIGHTS = bytes(range(256)) * 3
FILLER_FIELD = 99  # not a ModelProto field: skipped by length


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def entry(key: bytes | None, value: bytes | None, extra: bytes = b"") -> bytes:
    key_field = ld(1, key) if key is not None else b""
    value_field = ld(2, value) if value is not None else b""
    return ld(14, key_field + value_field + extra)


HEADER = tag(1, 0) + varint(8) + ld(7, b"a graph the kernel skips")


def even(data: bytes) -> bytes:
    """``data``, made even-length with a skipped 3-byte field when it is odd (rule 3)."""
    return data if len(data) % 2 == 0 else data + tag(1, 0) + varint(128)


def odd(data: bytes) -> bytes:
    """``data``, made odd-length with a skipped 3-byte field when it is even."""
    return data if len(data) % 2 else data + tag(1, 0) + varint(128)


def fill(data: bytes, size: int) -> bytes:
    """``data`` then a skipped field bringing it to exactly ``size`` bytes."""
    for content in range(size - len(data) - 2, -1, -1):
        padded = data + ld(FILLER_FIELD, bytes(content))
        if len(padded) == size:
            return padded
    raise ValueError(f"cannot fill {len(data)} bytes to {size}")


def kernel_entries(
    microcode: bytes | None = MICROCODE,
    weights: bytes | None = WEIGHTS,
    td_size: bytes | None = b"628",
    td_count: bytes | None = b"1",
) -> bytes:
    parts = [
        entry(b"ane.microcode.b64", base64.b64encode(microcode)) if microcode is not None else b"",
        entry(b"ane.weights.b64", base64.b64encode(weights)) if weights is not None else b"",
        entry(b"ane.td_size", td_size) if td_size is not None else b"",
        entry(b"ane.td_count", td_count) if td_count is not None else b"",
    ]
    return b"".join(parts)


def good(*extra: bytes) -> bytes:
    """A minimal accepted container, with ``extra`` top-level bytes after the kernel entries."""
    return even(HEADER + kernel_entries() + b"".join(extra))


def outcome(data: bytes, bo_size: int | None = None) -> tuple[int, str]:
    verdict = check_bo(data, bo_size)
    return verdict.errno, verdict.rule


OK = (0, "")


def image(microcode: bytes = MICROCODE, weights: bytes = WEIGHTS) -> bytes:
    return microcode + bytes(round_up(len(microcode), 16) - len(microcode)) + weights


# --- Rules 2, 14, 15: tags and varints ------------------------------------------------------------


@pytest.mark.parametrize("last", [0x01, 0x7F], ids=["bit-63", "bits-past-64"])
def test_a_ten_byte_varint_is_skipped_and_its_high_bits_dropped(last: int) -> None:
    assert outcome(good(tag(1, 0) + b"\xff" * 9 + bytes([last]))) == OK  # rule 14


def test_an_eleven_byte_varint_is_einval() -> None:
    data = good()
    at = len(data) + 1
    verdict = check_bo(even(data + tag(1, 0) + b"\x80" * 10 + b"\x01"))
    assert (verdict.errno, verdict.rule, verdict.offset) == (errno.EINVAL, "varint-too-long", at)


@pytest.mark.parametrize(
    "tail",
    [b"\x80", tag(1, 0) + b"\x80", tag(1, 1) + b"\x01" * 7, tag(1, 5) + b"\x01" * 3],
    ids=["tag", "varint-value", "fixed64", "fixed32"],
)
def test_a_field_running_off_the_end_of_the_bo_is_einval(tail: bytes) -> None:
    data = fill(good(), PAGE_SIZE - len(tail)) + tail
    verdict = check_bo(data)
    assert (verdict.errno, verdict.rule, verdict.offset) == (
        errno.EINVAL,
        "truncated-tag",
        PAGE_SIZE - len(tail),
    )
    assert f"the BO ends at {PAGE_SIZE}" in verdict.detail


@pytest.mark.parametrize(
    "field",
    [tag(3, 0) + varint(300), tag(3, 1) + bytes(8), ld(3, b"xyz"), tag(3, 5) + bytes(4)],
    ids=["wire0", "wire1", "wire2", "wire5"],
)
def test_wire_types_0_1_2_5_are_skipped_at_top_level_and_in_entries(field: bytes) -> None:
    assert outcome(good(field)) == OK
    data = even(HEADER + kernel_entries(td_size=None) + entry(b"ane.td_size", b"632", field))
    assert check_bo(data).td_size == 632


@pytest.mark.parametrize("wire", [3, 4, 6, 7])
def test_wire_types_3_4_6_7_are_einval_at_top_level_and_in_entries(wire: int) -> None:
    data = good()
    verdict = check_bo(even(data + tag(3, wire) + bytes(8)))
    assert (verdict.errno, verdict.rule, verdict.offset) == (errno.EINVAL, "wire-type", len(data))
    inside = even(HEADER + kernel_entries() + entry(b"k", b"v", tag(3, wire) + bytes(8)))
    assert outcome(inside) == (errno.EINVAL, "wire-type")


def test_field_numbers_wrap_to_their_low_32_bits() -> None:
    wrapped_entry = tag((1 << 32) + 14, 2)
    body = ld(1, b"ane.td_size") + ld(2, b"632")
    data = even(HEADER + kernel_entries() + wrapped_entry + varint(len(body)) + body)
    assert check_bo(data).td_size == 632
    wrapped_key = tag((1 << 35) + 1, 2) + varint(11) + b"ane.td_size" + ld(2, b"633")
    assert check_bo(even(HEADER + kernel_entries() + ld(14, wrapped_key))).td_size == 633
    not_an_entry = tag((1 << 16) + 14, 2)
    assert check_bo(good(not_an_entry + varint(len(body)) + body)).td_size == 628


def test_a_length_past_the_end_of_the_bo_is_einval() -> None:
    data = good()
    verdict = check_bo(even(data + tag(3, 2) + varint(PAGE_SIZE)))
    assert (verdict.errno, verdict.rule, verdict.offset) == (
        errno.EINVAL,
        "length-past-end",
        len(data),
    )


@pytest.mark.parametrize("excess", [0, 1])
def test_a_length_may_reach_the_end_of_the_bo_but_not_pass_it(excess: int) -> None:
    head = fill(good(), PAGE_SIZE - 12) + tag(3, 2)
    left = PAGE_SIZE - len(head) - 1
    data = head + varint(left + excess) + bytes(range(1, 1 + left))
    assert len(data) == PAGE_SIZE
    assert outcome(data) == (OK if not excess else (errno.EINVAL, "length-past-end"))


def test_inside_an_entry_the_entry_is_the_end() -> None:
    # The BO has room for the key's 10 bytes, the entry has not.
    short_key = tag(1, 2) + varint(10) + b"abc"
    assert outcome(good(ld(14, short_key))) == (errno.EINVAL, "length-past-end")
    assert outcome(good(ld(14, tag(3, 5) + b"\x01\x02"))) == (errno.EINVAL, "truncated-tag")


# --- Rules 1, 3: the whole BO, zero bytes ---------------------------------------------------------


@pytest.mark.parametrize("value_len", range(4))
def test_parity_decides_when_zeros_follow_the_container(value_len: int) -> None:
    data = HEADER + kernel_entries() + entry(b"foreign", b"v" * value_len)
    verdict = check_bo(data)
    if len(data) % 2 == 0:
        assert verdict.ok
    else:
        assert (verdict.errno, verdict.rule, verdict.offset) == (
            errno.EINVAL,
            "truncated-tag",
            len(data),
        )
        assert f"the {PAGE_SIZE - len(data)} zero bytes from offset {len(data)}" in verdict.detail


@pytest.mark.parametrize(
    ("size", "refused_at"),
    [(PAGE_SIZE, None), (PAGE_SIZE - 1, PAGE_SIZE - 1), (PAGE_SIZE + 1, PAGE_SIZE + 1)],
    ids=["ends-on-the-page", "one-zero-left", "page-and-one"],
)
def test_a_container_ending_on_a_page_boundary_leaves_no_zeros(
    size: int, refused_at: int | None
) -> None:
    verdict = check_bo(fill(good(), size))
    if refused_at is None:
        assert verdict.ok
    else:
        assert (verdict.errno, verdict.rule, verdict.offset) == (
            errno.EINVAL,
            "truncated-tag",
            refused_at,
        )


def test_a_zero_as_the_last_byte_of_the_bo_is_a_tag_without_varint() -> None:
    assert outcome(fill(good(), PAGE_SIZE - 2) + b"\0\0") == OK
    verdict = check_bo(fill(good(), PAGE_SIZE - 3) + b"\x08\x01\0")
    assert (verdict.errno, verdict.rule, verdict.offset) == (
        errno.EINVAL,
        "truncated-tag",
        PAGE_SIZE - 1,
    )


def test_zero_pairs_are_skipped_not_a_stop() -> None:
    td_size = entry(b"ane.td_size", b"640")
    data = even(HEADER + b"\0\0" * 50 + kernel_entries(td_size=None) + b"\0\0" * 3 + td_size)
    # The old approximation stopped at the first zero and never saw this td_size.
    assert check_bo(data).td_size == 640
    inside = good(entry(b"ane.td_size", b"641", b"\0\0\0\0"))
    assert check_bo(inside).td_size == 641


def test_a_single_zero_takes_the_next_byte_as_its_varint() -> None:
    assert outcome(good(b"\0\x05")) == OK
    assert outcome(good(b"\0\x80\x01")) == OK
    # Before an entry, its tag byte becomes the zero's varint and the entry's 2-byte length
    # (0x9e 0x01 here) is read as a tag of wire type 6.
    entries = kernel_entries()
    assert entries[1:3] == b"\x9e\x01"
    verdict = check_bo(even(HEADER + b"\0" + entries))
    assert (verdict.errno, verdict.rule, verdict.offset) == (
        errno.EINVAL,
        "wire-type",
        len(HEADER) + 2,
    )
    assert outcome(good(entry(b"k", b"v", b"\0"))) == (errno.EINVAL, "truncated-tag")


def test_a_two_gib_zero_tail_is_counted_not_read() -> None:
    size = 2 << 30
    tracemalloc.start()
    try:
        accepted = check_bo(good(), size)
        data = odd(HEADER + kernel_entries())
        refused = check_bo(data, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert accepted.ok
    assert (refused.rule, refused.offset) == ("truncated-tag", len(data))
    assert peak < 1 << 20


# --- Rules 4, 12, 13: entries ---------------------------------------------------------------------


def test_the_value_may_come_before_the_key() -> None:
    data = even(
        HEADER + kernel_entries(td_size=None) + ld(14, ld(2, b"636") + ld(1, b"ane.td_size"))
    )
    assert check_bo(data).td_size == 636


@pytest.mark.parametrize(
    "incomplete",
    [entry(b"ane.td_size", None), entry(None, b"999"), entry(None, None)],
    ids=["key-only", "value-only", "empty"],
)
def test_an_entry_without_key_or_value_is_ignored(incomplete: bytes) -> None:
    verdict = check_bo(good(incomplete))
    assert (verdict.errno, verdict.td_size) == (0, 628)


@pytest.mark.parametrize(
    ("key_len", "value", "expected"),
    [
        (63, b"v", OK),
        (64, b"v", (errno.EINVAL, "key-too-long")),
        (64, None, OK),
        (66, None, OK),
        (64, b"", (errno.EINVAL, "key-too-long")),
        (62, b"", OK),
    ],
)
def test_the_key_limit_applies_only_to_complete_entries(
    key_len: int, value: bytes | None, expected: tuple[int, str]
) -> None:
    assert outcome(good(entry(b"k" * key_len, value))) == expected


def test_the_key_limit_counts_nuls() -> None:
    padded63 = b"ane.td_size".ljust(63, b"\0")
    assert check_bo(good(entry(padded63, b"632"))).td_size == 632
    padded64 = b"ane.td_size".ljust(64, b"\0")
    assert outcome(good(entry(padded64, b"632"))) == (errno.EINVAL, "key-too-long")


@pytest.mark.parametrize(
    ("key", "td_size"),
    [(b"ane.td_size\0x", 632), (b"ane.td_size ", 628), (b"ANE.td_size", 628), (b"ane.td_siz", 628)],
)
def test_keys_compare_as_c_strings(key: bytes, td_size: int) -> None:
    assert check_bo(good(entry(key, b"632"))).td_size == td_size


@pytest.mark.parametrize(
    ("body", "td_size"),
    [
        (ld(1, b"foreign") + ld(1, b"ane.td_size") + ld(2, b"632"), 632),
        (ld(1, b"ane.td_size") + ld(1, b"foreign") + ld(2, b"632"), 628),
        (ld(1, b"ane.td_size") + ld(2, b"not a number") + ld(2, b"632"), 632),
        (tag(1, 0) + varint(5) + ld(2, b"632"), 628),
        (ld(1, b"ane.td_size") + tag(2, 0) + varint(632), 628),
    ],
    ids=["key-twice", "key-twice-foreign-last", "value-twice", "key-as-varint", "value-as-varint"],
)
def test_within_an_entry_the_last_wire2_key_and_value_count(body: bytes, td_size: int) -> None:
    verdict = check_bo(good(ld(14, body)))
    assert (verdict.errno, verdict.td_size) == (0, td_size)


def test_a_later_entry_replaces_an_earlier_one() -> None:
    other_weights = b"later"
    data = good(
        entry(b"ane.td_size", b"640"),
        entry(b"ane.weights.b64", base64.b64encode(other_weights)),
    )
    verdict = check_bo(data)
    assert (verdict.td_size, verdict.weights_len) == (640, len(other_weights))
    assert verdict.weights_sha256 == hashlib.sha256(other_weights).hexdigest()


def test_field_14_of_another_wire_type_is_skipped() -> None:
    assert outcome(good(tag(14, 0) + varint(7), tag(14, 5) + bytes(4))) == OK


# --- Rules 5, 16: base64 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        (b"QUJD", b"ABC"),
        (b"QQ==", b"A"),
        (b"QQ", b"A"),
        (b"QUI", b"AB"),
        (b"QUJDR", b"ABC"),
        (b"QUJDRA", b"ABCD"),
        (b"Q", b""),
        (b"Q===", b""),
        (b"QR==", b"A"),
        (b"====", b""),
        (b"=QUJD", b""),
        (b"", b""),
        (b"QQ=", b"A"),
        (b"QQ==QUJD", b"A"),
        (b"QQ==!!\v\0\x80", b"A"),
        (b"QU=JD", b"A"),
        (b"Q-_A", b"\x43\xef\xc0"),
        (b"Q+/A", b"\x43\xef\xc0"),
        (b"Q-/A", b"\x43\xef\xc0"),
        (b"Q+_A", b"\x43\xef\xc0"),
        (b"Q\tQ\r\n==", b"A"),
        (b" Q U J D ", b"ABC"),
        (b"QU\nJD\n", b"ABC"),
    ],
)
def test_the_kernels_base64(text: bytes, decoded: bytes) -> None:
    assert decode_base64(text) == decoded


ACCEPTED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-/_\n\r\t =")


@pytest.mark.parametrize("byte", range(256), ids=lambda b: f"0x{b:02x}")
def test_every_other_byte_is_refused_before_the_first_pad(byte: int) -> None:
    text = b"QU" + bytes([byte]) + b"JD"
    if byte in ACCEPTED:
        decode_base64(text)
        return
    with pytest.raises(Base64Error) as caught:
        decode_base64(text)
    assert caught.value.offset == 2
    assert caught.value.errno == errno.EINVAL
    assert caught.value.verdict.rule == "base64"
    assert f"byte 0x{byte:02x} at offset 2" in str(caught.value)


def test_base64_errors_are_kernel_rejections_and_format_errors() -> None:
    with pytest.raises(KernelRejection) as caught:
        decode_base64(b"QUJD\x0b")
    assert isinstance(caught.value, AneFormatError)
    assert "EINVAL" in str(caught.value)


PAYLOAD = bytes(range(256)) * (3 * CHUNK // 512 + 1)  # just over 2 chunks of text
TEXT = base64.b64encode(PAYLOAD)


@pytest.mark.parametrize("at", [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 2])
def test_whitespace_across_chunk_boundaries(at: int) -> None:
    assert decode_base64(TEXT[:at] + b"\n" + TEXT[at:]) == PAYLOAD
    assert decode_base64(TEXT[:at] + b" \r\n\t " + TEXT[at:]) == PAYLOAD


def test_urlsafe_text_across_chunks() -> None:
    assert decode_base64(TEXT.translate(bytes.maketrans(b"+/", b"-_"))) == PAYLOAD


@pytest.mark.parametrize("at", [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3])
def test_an_invalid_byte_is_found_in_any_chunk(at: int) -> None:
    with pytest.raises(Base64Error) as caught:
        decode_base64(TEXT[:at] + b"\x0b" + TEXT[at:])
    assert caught.value.offset == at


@pytest.mark.parametrize("at", [CHUNK - 3, CHUNK - 1, CHUNK, CHUNK + 2])
def test_the_first_pad_ends_decoding_in_any_chunk(at: int) -> None:
    assert decode_base64(TEXT[:at] + b"=\x00garbage" + TEXT[at:]) == decode_base64(TEXT[:at])
    assert len(decode_base64(TEXT[:at])) == at * 6 // 8


def test_a_bad_payload_byte_is_named_by_its_bo_offset() -> None:
    text = base64.b64encode(WEIGHTS)
    bad = text[:100] + b"\x0b" + text[101:]
    data = even(HEADER + kernel_entries(weights=None) + entry(b"ane.weights.b64", bad))
    verdict = check_bo(data)
    assert (verdict.errno, verdict.rule) == (errno.EINVAL, "base64")
    assert verdict.offset == data.index(bad) + 100


def weights_running_into_the_tail(text: bytes) -> bytes:
    """A container whose last entry, the weights, declares 4 bytes more than the container has."""
    value = tag(2, 2) + varint(len(text) + 4) + text
    body = ld(1, b"ane.weights.b64") + value
    return HEADER + kernel_entries(weights=None) + tag(14, 2) + varint(len(body) + 4) + body


def test_a_payload_running_into_the_zero_tail_stops_at_its_first_zero() -> None:
    data = weights_running_into_the_tail(base64.b64encode(WEIGHTS))
    # The entry ends 4 bytes into the zeros; 2 more zeros are a harmless pair.
    verdict = check_bo(data, len(data) + 4 + 2)
    assert (verdict.rule, verdict.offset) == ("base64", len(data))
    data = weights_running_into_the_tail(b"QQ==")
    accepted = check_bo(data, len(data) + 4 + 2)
    assert (accepted.errno, accepted.weights_len) == (0, 1)


@pytest.mark.parametrize("text", [b"", b"Q", b"Q===", b"====", b"=QUJD"])
def test_microcode_decoding_to_nothing_is_einval_weights_may(text: bytes) -> None:
    refused = even(HEADER + kernel_entries(microcode=None) + entry(b"ane.microcode.b64", text))
    assert outcome(refused) == (errno.EINVAL, "empty-microcode")
    accepted = even(HEADER + kernel_entries(weights=None) + entry(b"ane.weights.b64", text))
    verdict = check_bo(accepted)
    assert (verdict.errno, verdict.weights_len) == (0, 0)


# --- Rules 6, 10, 11: decimals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (b"628", 628),
        (b"+628", 628),
        (b"00628", 628),
        (b"628\n", 628),
        (b"0", 0),
        (b"4294967295", 4294967295),
        (b"+4294967295\n", 4294967295),
        (b"628\0junk", 628),
        (b"628\n\0junk", 628),
        (b"0" * 28 + b"628", 628),
    ],
)
def test_kstrtou32_accepts(value: bytes, number: int) -> None:
    assert parse_decimal(value) == number


@pytest.mark.parametrize(
    ("value", "err", "rule"),
    [
        (b"", errno.EINVAL, "decimal-invalid"),
        (b"+", errno.EINVAL, "decimal-invalid"),
        (b"\n", errno.EINVAL, "decimal-invalid"),
        (b"+\n", errno.EINVAL, "decimal-invalid"),
        (b"++628", errno.EINVAL, "decimal-invalid"),
        (b"-1", errno.EINVAL, "decimal-invalid"),
        (b"-0", errno.EINVAL, "decimal-invalid"),
        (b" 628", errno.EINVAL, "decimal-invalid"),
        (b"628 ", errno.EINVAL, "decimal-invalid"),
        (b"\t628", errno.EINVAL, "decimal-invalid"),
        (b"628\r\n", errno.EINVAL, "decimal-invalid"),
        (b"628\n\n", errno.EINVAL, "decimal-invalid"),
        (b"0x274", errno.EINVAL, "decimal-invalid"),
        (b"1e3", errno.EINVAL, "decimal-invalid"),
        (b"628.0", errno.EINVAL, "decimal-invalid"),
        ("\uff16\uff12\uff18".encode(), errno.EINVAL, "decimal-invalid"),  # fullwidth 628
        (b"\x00628", errno.EINVAL, "decimal-invalid"),
        (b"4294967296x", errno.EINVAL, "decimal-invalid"),
        (b"0" * 29 + b"628", errno.EINVAL, "decimal-too-long"),
        (b"1" * 32, errno.EINVAL, "decimal-too-long"),
        (b"1" * 31, errno.ERANGE, "decimal-range"),
        (b"4294967296", errno.ERANGE, "decimal-range"),
        (b"+4294967296", errno.ERANGE, "decimal-range"),
        (b"4294967296\n", errno.ERANGE, "decimal-range"),
        (b"18446744073709551615", errno.ERANGE, "decimal-range"),
        (b"18446744073709551616", errno.ERANGE, "decimal-range"),
        (b"99999999999999999999", errno.ERANGE, "decimal-range"),
        # kstrtoull reports a 64-bit overflow before it looks at what follows the digits.
        (b"18446744073709551616x", errno.ERANGE, "decimal-range"),
    ],
)
def test_kstrtou32_refuses(value: bytes, err: int, rule: str) -> None:
    with pytest.raises(KernelRejection) as caught:
        parse_decimal(value)
    assert (caught.value.errno, caught.value.verdict.rule) == (err, rule)


def test_decimals_are_parsed_during_the_scan() -> None:
    # Rule 10: the odd tail would be EINVAL, but the scan stops at the out-of-range value first.
    data = odd(HEADER + kernel_entries(td_size=b"4294967296"))
    verdict = check_bo(data)
    assert (verdict.errno, verdict.rule) == (errno.ERANGE, "decimal-range")
    assert verdict.offset == data.index(b"4294967296")


def test_the_first_bad_decimal_in_entry_order_decides() -> None:
    out_of_range = entry(b"ane.td_size", b"4294967296")
    invalid = entry(b"ane.td_count", b"x")
    assert outcome(good(out_of_range, invalid)) == (errno.ERANGE, "decimal-range")
    assert outcome(good(invalid, out_of_range)) == (errno.EINVAL, "decimal-invalid")


def test_a_replaced_bad_decimal_still_fails() -> None:
    data = even(HEADER + entry(b"ane.td_size", b"abc") + kernel_entries())
    assert outcome(data) == (errno.EINVAL, "decimal-invalid")


# --- Rule 7, U1, U4: after the scan ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "rule"),
    [
        (kernel_entries(microcode=None), "no-microcode"),
        (kernel_entries(microcode=None) + entry(b"ane.microcode.b64", None), "no-microcode"),
        (kernel_entries(td_size=None), "td-zero"),
        (kernel_entries(td_count=None), "td-zero"),
        (kernel_entries(td_size=b"0"), "td-zero"),
        (kernel_entries(td_count=b"+000\n"), "td-zero"),
    ],
    ids=["no-microcode", "microcode-without-value", "no-td_size", "no-td_count", "0", "+000"],
)
def test_post_scan_checks(entries: bytes, rule: str) -> None:
    assert outcome(even(HEADER + entries)) == (errno.EINVAL, rule)


def test_a_zero_size_is_located_at_its_value() -> None:
    data = even(HEADER + kernel_entries(td_count=b"0"))
    verdict = check_bo(data)
    assert (verdict.rule, verdict.offset) == ("td-zero", data.index(b"ane.td_count") + 14)
    assert data[verdict.offset : verdict.offset + 1] == b"0"


def test_weights_are_optional() -> None:
    verdict = check_bo(even(HEADER + kernel_entries(weights=None)))
    assert verdict.ok
    assert (verdict.weights_len, verdict.weights_sha256) == (0, hashlib.sha256().hexdigest())


def test_payloads_are_decoded_after_the_scan() -> None:
    # U1, a choice the vectors leave open: only the last value of a key is ever decoded.
    bad_first = even(HEADER + entry(b"ane.microcode.b64", b"!!!") + kernel_entries())
    assert outcome(bad_first) == OK
    bad_weights = good(entry(b"ane.weights.b64", b"!!!"), entry(b"ane.td_size", b"4294967296"))
    assert outcome(bad_weights) == (errno.ERANGE, "decimal-range")


def test_the_fit_check_is_the_submit_stage() -> None:
    check_fit(100, 1000, 1112)
    with pytest.raises(KernelRejection) as caught:
        check_fit(100, 1000, 1111)
    assert (caught.value.errno, caught.value.verdict.stage) == (errno.EINVAL, "submit")
    assert caught.value.verdict.rule == "payload-exceeds-bo"


def test_an_accepted_verdict_carries_what_the_kernel_writes_back() -> None:
    verdict = check_bo(good(entry(b"ane.td_count", b"3")))
    assert verdict == KernelVerdict(
        errno=0,
        stage="",
        rule="",
        detail=verdict.detail,
        offset=None,
        tsk_size=len(MICROCODE),  # not rounded up: the padding is not microcode
        td_size=628,
        td_count=3,
        weights_len=len(WEIGHTS),
        microcode_sha256=hashlib.sha256(MICROCODE).hexdigest(),
        weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    )


def test_check_bo_defaults_to_the_page_rounded_bo_and_refuses_a_smaller_one() -> None:
    data = odd(HEADER + kernel_entries())
    assert check_bo(data).offset == len(data)
    assert check_bo(data, round_up(len(data), PAGE_SIZE)) == check_bo(data)
    with pytest.raises(InvalidArgumentError, match="cannot hold"):
        check_bo(data, len(data) - 1)


# --- Rules 7, 8: the in-place rewrite -------------------------------------------------------------

STALE_FIELD = tag(1, 5) + b"\xa5\xa5\xa5\xa5"  # a stale pattern the parser skips


def stale_bo(container: bytes, pages: int = 2) -> bytearray:
    stale = STALE_FIELD * 1000
    bo = bytearray(pages * PAGE_SIZE)
    bo[: len(container) + len(stale)] = container + stale
    return bo


def test_the_rewrite_leaves_the_rest_of_the_bo_alone() -> None:
    container = good()
    bo = stale_bo(container)
    old = bytes(bo)
    verdict = prepare_submit(memoryview(bo))
    assert verdict == check_bo(container + STALE_FIELD * 1000, len(bo))
    written = image()
    assert (verdict.tsk_size, verdict.td_size, verdict.td_count) == (len(MICROCODE), 628, 1)
    assert bo[: len(written)] == written
    assert bo[len(written) :] == old[len(written) :]


def test_weights_whose_text_starts_before_their_place_go_through_a_buffer() -> None:
    weights_first = entry(b"ane.weights.b64", base64.b64encode(WEIGHTS))
    container = even(HEADER + weights_first + kernel_entries(weights=None))
    assert container.index(base64.b64encode(WEIGHTS)) < round_up(len(MICROCODE), 16)
    bo = stale_bo(container)
    old = bytes(bo)
    assert prepare_submit(memoryview(bo)).ok
    assert bo[: len(image())] == image()
    assert bo[len(image()) :] == old[len(image()) :]


def test_a_staging_buffer_when_decoding_in_place_would_overrun_the_text() -> None:
    # Weights text first, then 400 KiB of microcode: the weights' place (400 KiB) is further
    # ahead of their text than one chunk's output falls behind its input (CHUNK / 4), so
    # decoding straight into place would overwrite text not yet read.
    microcode = bytes(range(1, 256)) * 1606
    weights = PAYLOAD
    weights_first = entry(b"ane.weights.b64", base64.b64encode(weights))
    container = even(HEADER + weights_first + kernel_entries(microcode=microcode, weights=None))
    assert round_up(len(microcode), 16) - container.index(b"ane.weights.b64") > CHUNK // 4
    bo = bytearray(round_up(len(container), PAGE_SIZE))
    bo[: len(container)] = container
    assert prepare_submit(memoryview(bo)).weights_len == len(weights)
    assert bo[: len(image(microcode, weights))] == image(microcode, weights)


def test_long_wrapped_weights_are_decoded_in_place() -> None:
    weights = PAYLOAD
    text = base64.encodebytes(weights)  # MIME lines: every chunk takes the careful path
    container = even(HEADER + kernel_entries(weights=None) + entry(b"ane.weights.b64", text))
    bo = bytearray(round_up(len(container), PAGE_SIZE))
    bo[: len(container)] = container
    verdict = prepare_submit(memoryview(bo))
    assert verdict.weights_len == len(weights)
    assert bo[: len(image(weights=weights))] == image(weights=weights)
    assert (
        bo[len(image(weights=weights)) : len(container)] == container[len(image(weights=weights)) :]
    )


def test_a_refused_bo_is_left_as_it_was() -> None:
    container = even(HEADER + kernel_entries(weights=None) + entry(b"ane.weights.b64", b"QU\vJD"))
    bo = stale_bo(container)
    old = bytes(bo)
    assert prepare_submit(memoryview(bo)).rule == "base64"
    assert bo == old


def test_a_translated_bo_no_longer_holds_a_container() -> None:
    container = good()
    bo = bytearray(round_up(len(container), PAGE_SIZE))
    bo[: len(container)] = container
    assert prepare_submit(memoryview(bo)).ok
    translated = bytes(bo)
    again = prepare_submit(memoryview(bo))
    assert again.errno == errno.EINVAL
    assert bo == translated


def test_prepare_submit_needs_a_writable_bo() -> None:
    with pytest.raises(InvalidArgumentError, match="writable"):
        prepare_submit(memoryview(bytes(PAGE_SIZE)))


class CountingBinascii:
    """binascii with a count of the text bytes handed to ``a2b_base64``."""

    def __init__(self) -> None:
        self.text = 0
        self.Error = binascii.Error

    def a2b_base64(self, data: Buffer) -> bytes:
        self.text += memoryview(data).nbytes
        return binascii.a2b_base64(data)


def test_prepare_submit_decodes_the_weights_once(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = PAYLOAD  # over two chunks of text
    container = even(HEADER + kernel_entries(weights=weights))
    bo = bytearray(round_up(len(container), PAGE_SIZE))
    bo[: len(container)] = container
    counting = CountingBinascii()
    monkeypatch.setattr(b64, "binascii", counting)
    verdict = prepare_submit(memoryview(bo))
    assert verdict.ok and bo[: len(image(weights=weights))] == image(weights=weights)
    text = len(base64.b64encode(weights)) + len(base64.b64encode(MICROCODE))
    # Once, but for the last piece of each payload: its '=' sends it down the careful path,
    # which decodes that piece (at most a chunk) again.
    assert text <= counting.text <= text + CHUNK < 2 * text


@settings(max_examples=60, deadline=None)
@given(
    text=st.lists(
        st.sampled_from([b"QUJD", b"Q", b"-", b"_", b"+", b"/", b"\n", b" ", b"=", b"\v", b"!"]),
        max_size=40,
    ).map(b"".join),
    cut=st.integers(1, 9),
)
def test_decoded_length_is_what_decoding_gives_or_the_same_error(text: bytes, cut: int) -> None:
    pieces = [text[at : at + cut] for at in range(0, len(text), cut)]
    try:
        decoded: bytes | Base64Error = decode_base64(text)
    except Base64Error as exc:
        decoded = exc
    if isinstance(decoded, Base64Error):
        with pytest.raises(Base64Error) as caught:
            decoded_length(pieces, 0, "the text")
        assert caught.value.offset == decoded.offset
    else:
        assert decoded_length(pieces, 0, "the text") == len(decoded)


# --- parse_entries --------------------------------------------------------------------------------


def test_parse_entries_sees_what_the_kernel_sees() -> None:
    data = good(
        entry(b"ane.io", b"{}"),
        entry(b"ane.io\0stale", b'{"0": 1}'),
        entry(b"ane.io", None),
        entry(b"k" * 70, None),
    )
    entries = parse_entries(data)
    assert entries[b"ane.io"] == b'{"0": 1}'
    assert entries[b"ane.td_size"] == b"628"
    assert entries[b"ane.microcode.b64"] == base64.b64encode(MICROCODE)
    assert not any(len(key) >= 64 for key in entries)


def test_parse_entries_raises_only_for_the_scan() -> None:
    assert b"ane.microcode.b64" not in parse_entries(even(HEADER + kernel_entries(microcode=None)))
    with pytest.raises(KernelRejection) as caught:
        parse_entries(good(entry(b"ane.td_count", b"99999999999")))
    assert caught.value.errno == errno.ERANGE
    with pytest.raises(KernelRejection) as caught:
        parse_entries(odd(HEADER + kernel_entries()))
    assert caught.value.verdict.rule == "truncated-tag"


# --- Properties -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    microcode=st.binary(min_size=1, max_size=3000),
    weights=st.binary(max_size=6000),
    td_size=st.integers(1, 2**32 - 1),
    td_count=st.integers(1, 2**32 - 1),
)
def test_padded_standard_base64_round_trips(
    microcode: bytes, weights: bytes, td_size: int, td_count: int
) -> None:
    sizes = kernel_entries(microcode, weights, str(td_size).encode(), str(td_count).encode())
    container = even(HEADER + sizes)
    assert decode_base64(base64.b64encode(weights)) == weights
    verdict = check_bo(container)
    assert (verdict.tsk_size, verdict.td_size, verdict.td_count) == (
        len(microcode),
        td_size,
        td_count,
    )
    bo = bytearray(round_up(len(container), PAGE_SIZE))
    bo[: len(container)] = container
    assert prepare_submit(memoryview(bo)) == verdict
    assert bo[: len(image(microcode, weights))] == image(microcode, weights)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "truncate"]),
        st.integers(0, 4000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, where, value in mutations:
        at = where % (len(out) + 1)
        if op == "set" and at < len(out):
            out[at] = value
        elif op == "insert":
            out[at:at] = bytes([value])
        elif op == "delete":
            del out[at : at + 1 + value % 3]
        elif op == "truncate":
            del out[at:]
    return bytes(out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=MUTATIONS, extra_pages=st.integers(0, 2))
def test_check_bo_agrees_with_prepare_submit_on_mutants(
    mutations: list[tuple[str, int, int]], extra_pages: int
) -> None:
    data = mutate(good(entry(b"ane.io", b"{}")), mutations)
    size = round_up(len(data), PAGE_SIZE) + extra_pages * PAGE_SIZE
    bo = bytearray(size)
    bo[: len(data)] = data
    checked = check_bo(data, size)
    submitted = prepare_submit(memoryview(bo))
    assert checked == submitted
    if not submitted.ok:
        assert bo[: len(data)] == data
        assert not any(bo[len(data) :])
