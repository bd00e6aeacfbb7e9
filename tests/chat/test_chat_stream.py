"""Streaming detokenization: the pieces of `StreamDecoder` always add up to the full decode.

Two real `tokenizers` vocabularies are exercised: a LLaMA-style SentencePiece one built here
(metaspace ``▁``, byte-fallback pieces ``<0xF0>``, decoder Replace/ByteFallback/Fuse/Strip, special
tokens skipped) and the byte-level BPE of the tiny demo model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from ane_build.chat.tiny import train_tokenizer
from ane_build.chat.tokenizer import ChatTokenizer, StreamDecoder

SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
# Word pieces as a SentencePiece vocabulary has them: "▁" marks a preceding space.
WORDS = [
    "▁",
    "▁▁",
    "▁Hi",
    "▁there",
    "▁the",
    "re",
    "H",
    "i",
    "e",
    "▁caf",
    "é",
    "▁naïve",
    "日本",
    "▁語",
    ".",
    "!",
    "\ufffd",
]


def llama_style_tokenizer() -> Tokenizer:
    """A SentencePiece-like Unigram vocabulary with byte fallback and LLaMA's decoder chain."""
    pieces = SPECIALS + BYTES + WORDS
    # Longer pieces score higher, so the segmentation prefers whole words over bytes.
    vocab = [(p, -10.0 if p in BYTES or p in SPECIALS else -1.0 / len(p)) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    # A chat marker that is an added but not special token: decode keeps it.
    tok.add_tokens([AddedToken("<|user|>", special=False, normalized=False)])
    return tok


RAW_LLAMA = llama_style_tokenizer()
LLAMA = ChatTokenizer(RAW_LLAMA)
BYTE_LEVEL = ChatTokenizer(train_tokenizer(1024))


def ids_of(tok: ChatTokenizer, *pieces: str) -> list[int]:
    found = [tok.token_to_id(p) for p in pieces]
    assert None not in found, pieces
    return [i for i in found if i is not None]


def stream(tok: ChatTokenizer, ids: Sequence[int]) -> Iterator[tuple[int, str]]:
    """Each pushed id with the piece it produced; the flush comes last with id -1."""
    decoder = StreamDecoder(tok)
    for token in ids:
        yield token, decoder.push(token)
    yield -1, decoder.flush()


def settled_prefix(tok: ChatTokenizer, ids: Sequence[int]) -> str:
    """What a stream must have shown after ``ids``: the text up to the last regular token.

    Text of a trailing byte run (or a trailing U+FFFD of a byte-level vocabulary) may still
    change, so only the text before it is settled.
    """
    held = tok.special_ids | tok.byte_ids
    regular = [n for n, token in enumerate(ids) if token not in held]
    if not regular:
        return ""
    return tok.decode(ids[: regular[-1] + 1]).rstrip("\ufffd")


def check_stream(tok: ChatTokenizer, ids: list[int]) -> list[str]:
    pieces: list[str] = []
    for n, (token, piece) in enumerate(stream(tok, ids)):
        pieces.append(piece)
        if token >= 0:
            # Never behind: everything later tokens cannot change is already out.
            assert "".join(pieces) == settled_prefix(tok, ids[: n + 1]), ids[: n + 1]
    assert "".join(pieces) == tok.decode(ids)
    return pieces


def test_the_llama_style_tokenizer_really_falls_back_to_bytes() -> None:
    encoding = RAW_LLAMA.encode("🤖 Hi there", add_special_tokens=False)
    assert encoding.tokens == ["▁", "<0xF0>", "<0x9F>", "<0xA4>", "<0x96>", "▁Hi", "▁there"]
    assert LLAMA.decode(encoding.ids) == "🤖 Hi there"
    assert len(LLAMA.byte_ids) == 256
    assert LLAMA.special_ids == set(ids_of(LLAMA, *SPECIALS))
    assert not BYTE_LEVEL.byte_ids


ROBOT = ("▁", "<0xF0>", "<0x9F>", "<0xA4>", "<0x96>")


def test_four_byte_character_at_the_start_of_the_stream() -> None:
    ids = ids_of(LLAMA, *ROBOT, "▁Hi", "▁there")
    pieces = check_stream(LLAMA, ids)
    assert pieces == ["", "", "", "", "", "🤖 Hi", " there", ""]


def test_four_byte_character_right_after_a_skipped_special_token() -> None:
    ids = ids_of(LLAMA, "▁Hi", "</s>", *ROBOT, "▁there")
    assert LLAMA.decode(ids) == "Hi 🤖 there"
    check_stream(LLAMA, ids)
    ids = ids_of(LLAMA, "<s>", *ROBOT, "▁Hi", "▁there")
    assert "".join(check_stream(LLAMA, ids)) == "🤖 Hi there"


def test_byte_run_interrupted_by_a_skipped_special_token_is_one_run() -> None:
    # The special token is dropped before the decoder, so the four bytes still form one character.
    ids = ids_of(LLAMA, "▁Hi", "<0xF0>", "<0x9F>", "</s>", "<0xA4>", "<0x96>", "!")
    assert "".join(check_stream(LLAMA, ids)) == "Hi🤖!"


def test_a_later_invalid_byte_turns_the_whole_run_into_replacement_characters() -> None:
    # "A" is valid on its own, but the run A, F0 decodes as two U+FFFD: nothing may leave early.
    ids = ids_of(LLAMA, "▁Hi", "<0x41>", "<0xF0>", "▁there")
    assert LLAMA.decode(ids) == "Hi\ufffd\ufffd there"
    check_stream(LLAMA, ids)


def test_flush_returns_a_trailing_byte_run_and_starts_over() -> None:
    decoder = StreamDecoder(LLAMA)
    assert [decoder.push(i) for i in ids_of(LLAMA, "▁Hi", "<0xC3>", "<0xA9>")] == ["Hi", "", ""]
    assert decoder.flush() == "é"
    assert decoder.push(ids_of(LLAMA, "▁there")[0]) == "there"


# Random token sequences: any id, whole UTF-8 characters as byte pieces, and special tokens.
def llama_ids() -> st.SearchStrategy[list[int]]:
    vocab = LLAMA.vocab_size
    any_id = st.integers(0, vocab - 1).map(lambda i: [i])
    character = st.characters(codec="utf-8").map(
        lambda c: ids_of(LLAMA, *(f"<0x{b:02X}>" for b in c.encode("utf-8")))
    )
    special = st.sampled_from(SPECIALS).map(lambda t: ids_of(LLAMA, t))
    word = st.sampled_from(WORDS).map(lambda t: ids_of(LLAMA, t))
    chunks = st.lists(st.one_of(any_id, character, special, word), max_size=30)
    return chunks.map(lambda parts: [i for part in parts for i in part])


@settings(max_examples=400, deadline=None)
@given(llama_ids())
@example(ids_of(LLAMA, *ROBOT, "▁Hi", "▁there"))
@example(ids_of(LLAMA, "<s>", "▁", "<0xE6>", "<0x97>", "<0xA5>", "▁▁", "</s>", "<0xE6>"))
def test_llama_style_stream_equals_the_full_decode(ids: list[int]) -> None:
    check_stream(LLAMA, ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, BYTE_LEVEL.vocab_size - 1), max_size=40))
def test_byte_level_stream_equals_the_full_decode(ids: list[int]) -> None:
    check_stream(BYTE_LEVEL, ids)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_streaming_encoded_text_gives_the_text_back(text: str) -> None:
    for tok in (LLAMA, BYTE_LEVEL):
        ids = tok.encode(text)
        assert "".join(check_stream(tok, ids)) == tok.decode(ids)


class ShoutOnBang:
    """A decoder that rewrites earlier text: everything turns upper case once "!" arrives."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        text = "".join(tokens).replace("Ġ", " ")
        return [text.upper() if "!" in text else text]


def test_a_decoder_that_rewrites_shown_text_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    raw: Any = train_tokenizer(1024)
    raw.decoder = decoders.Decoder.custom(ShoutOnBang())
    tok = ChatTokenizer(raw)
    ids = raw.encode("hello there!", add_special_tokens=False).ids
    with caplog.at_level(logging.WARNING, logger="ane_build.chat.tokenizer"):
        text = "".join(piece for _, piece in stream(tok, ids))
    assert tok.decode(ids) == "HELLO THERE!"
    assert text != tok.decode(ids)
    assert text.endswith("!")
    assert any("not a prefix of the full decode" in r.getMessage() for r in caplog.records)
