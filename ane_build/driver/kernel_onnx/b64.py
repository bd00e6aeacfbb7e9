"""Rules 5 and 16: the kernel's base64 loop, fed in chunks so any payload decodes in flat memory."""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable
from errno import EINVAL

from ...errors import Base64Error
from .verdict import Buffer, KernelVerdict

# Payloads are decoded in chunks of this many text bytes (a multiple of 4, so clean text leaves
# no carry between chunks); small enough to stay in cache, large enough to amortise the loop.
CHUNK = 1 << 20
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SKIPPED = b"\n\r\t "
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_NOT_KERNEL_BASE64 = re.compile(b"[^" + re.escape(_ALPHABET + b"-_" + _SKIPPED) + b"]")


def _kernel_text(raw: bytes, start: int, name: str) -> tuple[bytes, bool]:
    """``raw`` up to its first ``=``, and whether there was one; the kernel's rules checked.

    Raises:
        Base64Error: A byte the kernel refuses before the first ``=`` (its offset from ``start``).
    """
    stop = raw.find(b"=")
    ended = stop >= 0
    if ended:
        raw = raw[:stop]
    bad = _NOT_KERNEL_BASE64.search(raw)
    if bad:
        offset = start + bad.start()
        detail = (
            f"byte 0x{raw[bad.start()]:02x} at offset {offset} in {name} is not "
            "base64 (the kernel takes A-Z a-z 0-9 + - / _, skips \\n \\r \\t and space, "
            "and stops at the first '=')"
        )
        raise Base64Error(KernelVerdict(EINVAL, "translate", "base64", detail, offset), offset)
    return raw, ended


class Base64Decoder:
    """The kernel's base64 loop over text fed in pieces.

    Attributes:
        ended: An ``=`` was seen: the kernel ignores everything after it.
    """

    def __init__(self, origin: int, name: str) -> None:
        self._next = origin
        self._name = name
        self._carry = b""
        self.ended = False

    def feed(self, piece: Buffer) -> bytes:
        """Decode what ``piece`` completes; keep up to 3 characters for the next piece."""
        start = self._next
        self._next += len(piece)
        if self.ended:
            return b""
        # Clean standard text decodes to exactly 3/4 of its length; anything else (whitespace,
        # '-', '_', '=', an invalid byte) is skipped by binascii or makes it raise, so a shorter
        # result sends the piece down the careful path.
        block = self._carry + piece if self._carry else piece
        cut = len(block) // 4 * 4
        try:
            decoded = binascii.a2b_base64(block[:cut])
        except binascii.Error:
            decoded = b""
        # A copy: in place, the text under ``block`` is about to be overwritten.
        rest = bytes(block[cut:])
        if len(decoded) * 4 == cut * 3 and not rest.translate(None, _ALPHABET):
            self._carry = rest
            return decoded
        return self._feed_careful(bytes(piece), start)

    def _feed_careful(self, raw: bytes, start: int) -> bytes:
        raw, self.ended = _kernel_text(raw, start, self._name)
        data = self._carry + raw.translate(_TO_STANDARD, _SKIPPED)
        cut = len(data) // 4 * 4
        self._carry = data[cut:]
        return binascii.a2b_base64(data[:cut])

    def finish(self) -> bytes:
        """The last 0 to 2 bytes, from the characters left over."""
        # The kernel emits a byte whenever 8 bits are pending: 2 or 3 leftover characters give
        # 1 or 2 bytes, a single one gives nothing.
        if len(self._carry) < 2:
            return b""
        return binascii.a2b_base64(self._carry + b"=" * (4 - len(self._carry)))


def decode_pieces(
    pieces: Iterable[Buffer], origin: int, name: str, sink: Callable[[bytes], None]
) -> None:
    """Decode consecutive pieces of text starting at ``origin``, handing each chunk to ``sink``.

    Raises:
        Base64Error: At the first invalid byte before the first ``=`` (offsets from ``origin``).
    """
    decoder = Base64Decoder(origin, name)
    for piece in pieces:
        chunk = decoder.feed(piece)
        if chunk:
            sink(chunk)
        if decoder.ended:
            break
    sink(decoder.finish())


def decoded_length(pieces: Iterable[Buffer], origin: int, name: str) -> int:
    """What `decode_pieces` would decode from these pieces, in bytes, without decoding them.

    The same rules and the same errors as the decoder, at the speed of one ``bytes.translate``
    over clean text: for a caller that must know the text is good before it writes anything.

    Raises:
        Base64Error: At the first invalid byte before the first ``=`` (offsets from ``origin``).
    """
    chars, start = 0, origin
    for piece in pieces:
        raw = bytes(piece)
        at, start = start, start + len(raw)
        if not raw.translate(None, _ALPHABET):
            chars += len(raw)
            continue
        raw, ended = _kernel_text(raw, at, name)
        chars += len(raw.translate(None, _SKIPPED))
        if ended:
            break
    # The kernel emits a byte whenever 8 bits are pending; leftover bits are dropped.
    return chars * 6 // 8


def decode_base64(text: Buffer) -> bytes:
    """Decode base64 exactly as the fork kernel does (rule 5).

    Args:
        text: The base64 text.

    Returns:
        The decoded bytes.

    Raises:
        Base64Error: Names the offset and the byte of the first invalid character.
    """
    view = memoryview(text).cast("B")
    parts: list[bytes] = []
    pieces = (view[at : at + CHUNK] for at in range(0, len(view), CHUNK))
    decode_pieces(pieces, 0, "the text", parts.append)
    return b"".join(parts)
