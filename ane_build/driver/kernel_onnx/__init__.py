r"""The fork kernel's ONNX metadata parser, reproduced rule for rule (DESIGN section 3).

On an ONNX-flag submit the fork kernel parses the slot-0 BO as an ONNX ``ModelProto``, picks four
``metadata_props`` entries, decodes them and rewrites the BO in place. This module gives the same
verdict (errno, written-back sizes, BO bytes after the rewrite) for the simulator, the container
verifier and the bundle loader. It is pure: bytes in, verdict out. It does no I/O, opens no device
and imports only the standard library, ``..errors`` and ``.uapi``; nothing above the driver layer.

The rules. R1-R9 restate DESIGN section 3; R10-R15 were found by making the 922 kernel vectors
(``../shared/kernel-vectors``) pass; U1-U5 are choices the vectors cannot decide (both
alternatives give all 922 verdicts).

R1. The whole BO is parsed, ``npages * PAGE_SIZE`` bytes: the container, then whatever follows it.
R2. Top level: a varint tag of at most 10 bytes (longer, or running off the end: EINVAL); field
    number = low 32 bits of ``tag >> 3``, wire type = ``tag & 7``. Wire 0 skips a varint, 1 skips
    8 bytes, 5 skips 4, 2 reads a varint length (more than is left: EINVAL) and is an entry when
    the field is 14, skipped otherwise. Wire 3, 4, 6, 7: EINVAL. Too few bytes for any: EINVAL.
R3. A zero byte is a field-0 varint tag: a pair of zeros is harmless, a single zero at the end is
    EINVAL. Only the parity of a zero run matters, so runs are skipped arithmetically.
R4. Inside an entry the same tag rules apply, bounded by the entry. Wire-2 field 1 is the key,
    wire-2 field 2 the value; a later one replaces an earlier one; other fields are skipped.
R5. An entry lacking a key or a value is ignored entirely, even with a 64-byte key.
R6. Then a key of ``ONNX_KEY_LIMIT`` (64) bytes or more is EINVAL.
R7. Keys compare as C strings: bytes from the first NUL on do not count.
R8. ``ane.microcode.b64``/``ane.weights.b64`` use the kernel's base64 loop: ``A-Z a-z 0-9``, ``+``
    or ``-`` is 62, ``/`` or ``_`` is 63; ``\n \r \t`` and space are skipped; the first ``=``
    ends decoding; any other byte is EINVAL; fewer than 8 leftover bits are dropped.
R9. ``ane.td_size``/``ane.td_count``: a value of ``ONNX_NUMBER_LIMIT`` (32) bytes or more is
    EINVAL; else it is cut at its first NUL and parsed by ``kstrtou32(value, 10)``.
R10. After the scan: no microcode, microcode decoding to 0 bytes, td_size 0 or td_count 0 (absent
    counts as 0): EINVAL. Weights are optional. Then ``round_up(microcode, ANE_CMD_GRAN) +
    weights > BO`` is EINVAL (the "submit" stage). On success the BO becomes microcode, zeros to
    the next 16 bytes, weights; the rest keeps its old bytes. tsk_size = the microcode length.
R11. Decimals are parsed during the scan, when their entry is read: an out-of-range td_size
    returns ERANGE even when the BO would fail later (vectors ``td_size:b'4294967296'`` and the
    other ERANGE cases sit in odd-length containers whose tail alone would be EINVAL).
R12. kstrtou32 in full: optional ``+``; the longest run of digits (none: EINVAL) overflowing 64
    bits is ERANGE before anything else is looked at; then one optional ``\n``; then anything
    left is EINVAL; then a value above 4294967295 is ERANGE.
R13. A field counts as present even when empty: an empty value completes an entry, so a 64-byte
    key with an empty value is EINVAL (``foreign-key-len-emptyvalue:64``).
R14. The key limit counts the raw key, NULs included (``ane-key-padded-len:65`` is EINVAL).
R15. The 10th byte of a varint may carry any 7 bits: there is no overflow check
    (``top:varint-10th-byte-0x7f`` is accepted).
U1. Base64 values are decoded after the scan (the scan records where the last value of each key
    is). Decoding each entry as it is scanned gives the same 922 verdicts; the two differ only for
    a bad payload replaced by a later entry, or a bad payload before an out-of-range decimal.
U2. The order of the post-scan EINVAL checks is invisible (same errno, BO untouched): the cheap
    ones go first so a bad td_size never costs a weights decode.
U3-U5. Field 1 twice (last wins), C-string keys (R7), field-number wrap (R2) and the 10-byte
    varint limit follow DESIGN; the vectors meant to show them are odd-length, so EINVAL anyway.
"""

from __future__ import annotations

from .b64 import decode_base64
from .translate import check_bo, prepare_submit
from .verdict import KernelVerdict
from .wire import (
    MICROCODE_KEY,
    TD_COUNT_KEY,
    TD_SIZE_KEY,
    WEIGHTS_KEY,
    parse_decimal,
    parse_entries,
)

__all__ = [
    "MICROCODE_KEY",
    "TD_COUNT_KEY",
    "TD_SIZE_KEY",
    "WEIGHTS_KEY",
    "KernelVerdict",
    "check_bo",
    "decode_base64",
    "parse_decimal",
    "parse_entries",
    "prepare_submit",
]
