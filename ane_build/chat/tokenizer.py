"""Tokenizer of a chat model folder (``tokenizer.json`` + configs) and streaming detokenization.

Wraps a `tokenizers.Tokenizer`, works out the BOS token and every end-of-sequence id from
``tokenizer_config.json``, ``generation_config.json`` and the model config (``config.json`` or
``genai_config.json``), and turns a stream of token ids into text pieces that add up to the full
decode. This module must not run models or render templates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._deps import require
from .config import ModelConfig, read_json, token_ids
from .errors import ChatError
from .template import token_text

log = logging.getLogger(__name__)


class ChatTokenizer:
    """Text to token ids and back, with the model's BOS and EOS conventions.

    Args:
        tokenizer: A loaded `tokenizers.Tokenizer`.
        bos_token: Text of the beginning-of-sequence token, if the model uses one.
        add_bos: Prepend the BOS token when encoding a prompt that does not start with it.
        eos_ids: Every token id that ends generation.

    Attributes:
        special_ids: Ids of the special tokens `decode` leaves out.
        byte_ids: Ids of the byte-fallback pieces ``<0x00>`` to ``<0xFF>`` (none in byte-level
            vocabularies).
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
        self.special_ids = frozenset(
            i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special
        )
        # SentencePiece byte-fallback pieces, as LLaMA-family vocabularies name them.
        self.byte_ids = frozenset(
            i for b in range(256) if (i := tokenizer.token_to_id(f"<0x{b:02X}>")) is not None
        )
        self.bos_token = bos_token
        self.bos_id: int | None = tokenizer.token_to_id(bos_token) if bos_token else None
        self.add_bos = add_bos and self.bos_id is not None
        self.eos_ids = frozenset(eos_ids)

    @classmethod
    def from_dir(cls, directory: Path, model_config: ModelConfig | None = None) -> ChatTokenizer:
        """Load ``tokenizer.json`` and the configs beside it.

        Args:
            directory: The folder holding ``tokenizer.json``.
            model_config: The folder's model config, for its end-of-sequence ids; read from
                ``directory`` when not given.

        Raises:
            ChatError: ``tokenizer.json`` is missing or unreadable, or a config is malformed.
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
        generation = read_json(directory / "generation_config.json")
        eos_ids.update(token_ids(generation.get("eos_token_id")))
        if model_config is None:
            model_config = ModelConfig.from_dir(directory)
        eos_ids.update(model_config.eos_token_ids)
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
    """Turns token ids, one at a time, into text pieces whose concatenation is the full decode.

    Decoding a token alone loses context (leading-space markers, characters split across
    tokens), so each step decodes a short window that starts at a token already shown and emits
    only the part of the window's text that later tokens cannot change. `flush` ends the stream
    with whatever the full decode holds beyond the pieces already emitted.

    Args:
        tokenizer: The tokenizer to decode with.
    """

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._start = 0
        self._sent = ""
        self._pieces: list[str] = []

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it settles (possibly empty)."""
        self._ids.append(token_id)
        tok = self._tok
        # A skipped special token adds no text, and a byte-fallback piece <0xXX> belongs to a run
        # that the decoder turns into text only as a whole: one more byte can turn the run's
        # characters into U+FFFD, or complete them. The run is settled by the next regular token.
        if token_id in tok.special_ids or token_id in tok.byte_ids:
            return ""
        window = tok.decode(self._ids[self._start :])
        # The window starts at a regular token whose text is already out (or at the very first
        # token), so decoders that treat the first token specially (LLaMA's Strip of one leading
        # space, Metaspace) treat it alike in every decode of this window, and byte runs never
        # cross its start: what the window adds after `_sent` is what the full decode adds. A
        # trailing U+FFFD may be an incomplete character of a byte-level vocabulary that the
        # next token completes, so it is held back. A window that no longer starts with what was
        # sent (a decoder rewriting text already shown) emits nothing more; `flush` reports it.
        stable = len(window.rstrip("\ufffd"))
        if stable <= len(self._sent) or not window.startswith(self._sent):
            return ""
        piece = window[len(self._sent) : stable]
        self._pieces.append(piece)
        if stable == len(window):
            self._start = len(self._ids) - 1
            self._sent = tok.decode(self._ids[self._start :])
        else:
            self._sent = window[:stable]
        return piece

    def flush(self) -> str:
        """End the stream: the rest of the full decode (text held back so far), then start over.

        The rest is cut from one decode of every pushed token, so the stream as a whole equals
        `ChatTokenizer.decode` of the tokens whatever was held back, given that every piece
        already emitted was settled text; a warning is logged if a decoder broke that.
        """
        full = self._tok.decode(self._ids)
        sent = "".join(self._pieces)
        if not full.startswith(sent):
            log.warning(
                "streamed text %r is not a prefix of the full decode %r; the tokenizer's "
                "decoder changed text after it was shown",
                sent[-40:],
                full[-40:],
            )
        self._ids, self._start, self._sent, self._pieces = [], 0, "", []
        return full[len(sent) :]
