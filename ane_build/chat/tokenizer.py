"""Tokenizer of a chat model folder (``tokenizer.json`` + configs) and streaming detokenization.

Wraps a `tokenizers.Tokenizer`, works out the BOS token and every end-of-sequence id from
``tokenizer_config.json``, ``generation_config.json`` and ``config.json``, and turns a stream of
token ids into text pieces that never split a multi-byte character. This module must not run models
or render templates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._deps import require
from .errors import ChatError
from .template import token_text

log = logging.getLogger(__name__)


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file; an absent file gives an empty dict.

    Raises:
        ChatError: The file exists but is not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ChatError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChatError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ChatError(f"{path}: expected a JSON object")
    return data


def _ids(value: object) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class ChatTokenizer:
    """Text to token ids and back, with the model's BOS and EOS conventions.

    Args:
        tokenizer: A loaded `tokenizers.Tokenizer`.
        bos_token: Text of the beginning-of-sequence token, if the model uses one.
        add_bos: Prepend the BOS token when encoding a prompt that does not start with it.
        eos_ids: Every token id that ends generation.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        bos_token: str | None = None,
        add_bos: bool = True,
        eos_ids: Iterable[int] = (),
    ) -> None:
        self._tok = tokenizer
        self.bos_token = bos_token
        self.bos_id: int | None = tokenizer.token_to_id(bos_token) if bos_token else None
        self.add_bos = add_bos and self.bos_id is not None
        self.eos_ids = frozenset(eos_ids)

    @classmethod
    def from_dir(cls, directory: Path) -> ChatTokenizer:
        """Load ``tokenizer.json`` and the configs beside it.

        Raises:
            ChatError: ``tokenizer.json`` is missing or unreadable.
        """
        tokenizers = require("tokenizers")
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ChatError(f"{directory}: no tokenizer.json next to the model")
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise ChatError(f"{path}: cannot load tokenizer: {exc}") from exc
        config = read_json(directory / "tokenizer_config.json")
        bos = token_text(config.get("bos_token"))
        eos_ids: set[int] = set()
        eos = token_text(config.get("eos_token"))
        eos_id = tok.token_to_id(eos) if eos is not None else None
        if eos_id is not None:
            eos_ids.add(eos_id)
        for name in ("generation_config.json", "config.json"):
            eos_ids.update(_ids(read_json(directory / name).get("eos_token_id")))
        if not eos_ids:
            log.warning(
                "%s: no end-of-sequence token found; answers stop at the length limit", path
            )
        add_bos = config.get("add_bos_token", True) is not False
        return cls(tok, bos_token=bos, add_bos=add_bos, eos_ids=eos_ids)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        size: int = self._tok.get_vocab_size(with_added_tokens=True)
        return size

    def token_to_id(self, token: str) -> int | None:
        """The id of one token, or None when the vocabulary lacks it."""
        found: int | None = self._tok.token_to_id(token)
        return found

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with the BOS id first when the model expects one.

        Special tokens written in the text (e.g. ``</s>`` from a chat template) map to their ids.
        """
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens left out."""
        text: str = self._tok.decode(list(ids), skip_special_tokens=True)
        return text


class StreamDecoder:
    """Turns token ids, one at a time, into the text each adds.

    Decoding a single token alone loses context (leading-space markers, bytes of a character
    split across tokens), so each step decodes a short window and emits what it adds beyond the
    text already emitted; a piece ending in an incomplete character waits for the next token.

    Args:
        tokenizer: The tokenizer to decode with.
    """

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it completes (possibly empty)."""
        self._ids.append(token_id)
        return self._emit()

    def _emit(self) -> str:
        before = self._tok.decode(self._ids[self._prefix : self._read])
        after = self._tok.decode(self._ids[self._prefix :])
        # A UTF-8 character spans at most 4 bytes, so after 4 held tokens the bytes are invalid
        # for good; emitting them keeps the decoded window short.
        held = len(self._ids) - self._read
        if len(after) > len(before) and (not after.endswith("\ufffd") or held >= 4):
            self._prefix = self._read
            self._read = len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Return text still held back (an incomplete character at the very end)."""
        if self._read == len(self._ids):
            return ""
        before = self._tok.decode(self._ids[self._prefix : self._read])
        after = self._tok.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]
