"""A chat model folder loaded as one object, and a multi-turn chat session over it.

`ChatModel` bundles the ONNX model, tokenizer, chat template and context window of a folder laid
out like a Hugging Face export. `ChatSession` keeps the system prompt and history, renders and
truncates the prompt each turn, and streams the answer as text. This module must not print or
read user input: front ends (the example script) do that.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import AneDecoder, Backend, open_decoder
from .config import ModelConfig, read_json
from .errors import ContextOverflowError
from .generate import GenerationStats, TokenGenerator
from .model import CausalLM
from .sampling import SamplingConfig
from .template import ChatTemplate, Message, truncate_history
from .tokenizer import ChatTokenizer, StreamDecoder

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 2048


def _context_window(config: ModelConfig, tokenizer_config: Mapping[str, Any]) -> int:
    if config.context_length is not None:
        return config.context_length
    value = tokenizer_config.get("model_max_length")
    # Tokenizer configs use a huge sentinel for "no limit".
    if isinstance(value, int) and 0 < value < 10_000_000:
        return value
    log.warning(
        "no context window in config.json, genai_config.json or tokenizer_config.json; assuming %d",
        DEFAULT_CONTEXT_WINDOW,
    )
    return DEFAULT_CONTEXT_WINDOW


@dataclass
class ChatModel:
    """Everything needed to chat with one model folder.

    Attributes:
        directory: The folder with the tokenizer and configs.
        lm: The decoder: one ONNX export (``ort``) or a split's chunk programs (``ane``).
        tokenizer: Its tokenizer.
        template: Its chat template (or the built-in TinyLlama format, with a warning).
        context_window: Most tokens the model attends to.
    """

    directory: Path
    lm: CausalLM | AneDecoder
    tokenizer: ChatTokenizer
    template: ChatTemplate
    context_window: int

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        threads: int | None = None,
        backend: Backend = "ort",
        device: str = "auto",
    ) -> ChatModel:
        """Load a model folder (or a model file with its tokenizer files beside it).

        Args:
            path: Folder holding ``model.onnx`` (or another usual name, or the file its
                ``genai_config.json`` names) and ``tokenizer.json``, or the ``.onnx`` file
                itself; for the ``ane`` backend, a split folder (``ane-build llm split``).
            threads: onnxruntime intra-op threads; None lets onnxruntime decide.
            backend: ``ort``, ``ane`` or ``auto`` (see `open_decoder`).
            device: Where ``ane`` chunks with a container run (``auto``, ``sim`` or a path).

        Raises:
            ChatError: A file is missing, unreadable or inconsistent.
            AneError: A chunk or the device cannot be loaded.
        """
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        config = ModelConfig.from_dir(directory)
        tokenizer_config = read_json(directory / "tokenizer_config.json")
        lm = open_decoder(path, backend=backend, device=device, threads=threads, config=config)
        try:
            tokenizer = ChatTokenizer.from_dir(directory, config)
            template = ChatTemplate.from_dir(directory, tokenizer_config)
        except BaseException:
            if isinstance(lm, AneDecoder):
                lm.close()
            raise
        vocab = lm.vocab_size or config.vocab_size
        if vocab is not None and vocab < tokenizer.vocab_size:
            log.warning(
                "the tokenizer has %d tokens but the model only %d", tokenizer.vocab_size, vocab
            )
        window = _context_window(config, tokenizer_config)
        if isinstance(lm, AneDecoder):
            # The chunks' caches hold a static number of positions.
            window = min(window, lm.chunks.context)
        return cls(directory, lm, tokenizer, template, window)

    def describe(self) -> str:
        """One line naming the model, its cache, vocabulary, context and template."""
        return (
            f"{self.lm.describe()}, vocab {self.tokenizer.vocab_size}, context "
            f"{self.context_window}, {self.template.description}"
        )

    def close(self) -> None:
        """Free what the decoder holds (the ``ane`` backend's programs and device)."""
        if isinstance(self.lm, AneDecoder):
            self.lm.close()


class ChatSession:
    """A conversation: system prompt, history, and a generator whose KV cache spans turns.

    Args:
        model: The loaded chat model.
        system: System prompt, kept through every truncation; None for none.
        sampling: How tokens are chosen; its seed seeds the whole conversation.
        max_new_tokens: Upper bound on each answer; also the room kept free for the answer when
            old turns are dropped (at most half the context window).
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        system: str | None = None,
        sampling: SamplingConfig | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        self.model = model
        self.system = system
        self.sampling = sampling or SamplingConfig()
        self.max_new_tokens = max_new_tokens
        self.generator = TokenGenerator(
            model.lm, eos_ids=model.tokenizer.eos_ids, context_window=model.context_window
        )
        self.rng = np.random.default_rng(self.sampling.seed)
        self.turns: list[Message] = []
        self.last_stats: GenerationStats | None = None
        self.dropped_turns = 0

    def reset(self) -> None:
        """Forget the history (the system prompt stays)."""
        self.turns = []
        self.dropped_turns = 0

    def messages(self, user: str | None = None) -> list[Message]:
        """System prompt, history, and optionally a new user message."""
        out: list[Message] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.extend(self.turns)
        if user is not None:
            out.append({"role": "user", "content": user})
        return out

    def _render(self, messages: Sequence[Message]) -> list[int]:
        return self.model.tokenizer.encode(self.model.template.render(messages))

    def fit_prompt(self, user: str) -> list[int]:
        """Token ids of the next prompt, dropping the oldest turns if it would not fit.

        Dropped turns leave the history for good, so later turns see the same prefix.

        Raises:
            ContextOverflowError: The system prompt and this message alone fill the context.
        """
        window = self.model.context_window
        budget = window - min(self.max_new_tokens, window // 2)
        kept, dropped = truncate_history(
            self.messages(user), lambda m: len(self._render(m)) <= budget
        )
        if dropped:
            self.dropped_turns += dropped
            first = 1 if self.system else 0
            self.turns = kept[first:-1]
        ids = self._render(kept)
        if len(ids) >= window:
            raise ContextOverflowError(
                f"the prompt needs {len(ids)} tokens but the context window is {window}"
            )
        return ids

    def ask(self, user: str) -> Generator[str, None, None]:
        """Stream the answer to ``user`` as text pieces.

        The user message and the answer join the history when the stream ends, also when the
        caller stops it early (the partial answer is kept). ``last_stats`` then holds the
        timings.

        Raises:
            ContextOverflowError: The message does not fit even after dropping all old turns.
        """
        ids = self.fit_prompt(user)
        return self._stream(user, ids)

    def _stream(self, user: str, ids: list[int]) -> Generator[str, None, None]:
        decoder = StreamDecoder(self.model.tokenizer)
        pieces: list[str] = []
        tokens = self.generator.generate(
            ids, max_new_tokens=self.max_new_tokens, sampling=self.sampling, rng=self.rng
        )
        try:
            with contextlib.closing(tokens):
                for token in tokens:
                    piece = decoder.push(token)
                    if piece:
                        pieces.append(piece)
                        yield piece
            tail = decoder.flush()
            if tail:
                pieces.append(tail)
                yield tail
        finally:
            self.turns.append({"role": "user", "content": user})
            self.turns.append({"role": "assistant", "content": "".join(pieces).strip()})
            self.last_stats = self.generator.last_stats
