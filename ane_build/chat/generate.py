"""Token generation over a `CausalLM`: prefill, decode loop, stop rules, timings.

The generator keeps its KV cache between calls and reuses the longest common prefix of the new
prompt, so a chat turn only prefills what changed. Tokens stream out as they are chosen. This
module must not tokenize text or render chat templates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import Decoder, DecoderCache
from .errors import ChatError
from .sampling import Sampler, SamplingConfig

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """Counts and timings of one `TokenGenerator.generate` call.

    Attributes:
        prompt_tokens: Tokens in the prompt.
        reused_tokens: Prompt tokens served from the KV cache of an earlier call.
        prefill_seconds: Time to run the new prompt tokens through the model.
        first_token_seconds: Time from the call to the first token (or to the stop).
        new_tokens: Tokens generated (an end-of-sequence token is not counted).
        decode_seconds: Time spent producing the tokens after the first one, excluding time
            the caller held the stream.
        decode_steps: Model steps run in that time (one per token after the first).
        stop_reason: ``"eos"``, ``"length"``, ``"context"``, ``"cancelled"`` or ``"running"``.
    """

    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_seconds: float = 0.0
    first_token_seconds: float = 0.0
    new_tokens: int = 0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    stop_reason: str = "running"

    @property
    def prefill_tokens_per_second(self) -> float:
        """Prompt tokens actually run per second of prefill."""
        run = self.prompt_tokens - self.reused_tokens
        return run / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens per second of the decode loop (one model step per token)."""
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for humans: time to first token, prefill and decode rates."""
        prefilled = self.prompt_tokens - self.reused_tokens
        reused = f", {self.reused_tokens} cached" if self.reused_tokens else ""
        return (
            f"TTFT {self.first_token_seconds * 1000:.1f} ms | "
            f"prefill {prefilled} tok{reused} @ {self.prefill_tokens_per_second:.1f} tok/s | "
            f"decode {self.new_tokens} tok @ {self.decode_tokens_per_second:.1f} tok/s | "
            f"stop: {self.stop_reason}"
        )


class TokenGenerator:
    """Streams tokens from a causal LM, keeping the KV cache between calls.

    Args:
        model: The decoder to run (either backend).
        eos_ids: Token ids that end an answer.
        context_window: Most positions the model supports; None means no limit.
    """

    def __init__(
        self, model: Decoder[Any], *, eos_ids: Iterable[int] = (), context_window: int | None = None
    ) -> None:
        self.model = model
        self.eos_ids = frozenset(eos_ids)
        self.context_window = context_window
        self.cache: DecoderCache = model.new_cache()
        self.last_stats = GenerationStats()
        self._active: Generator[int, None, None] | None = None

    def reset(self) -> None:
        """Drop the cached keys and values."""
        self.cache.clear()

    def _reuse_prefix(self, prompt: Sequence[int]) -> int:
        cache = self.cache
        if not cache.is_consistent():
            log.debug("KV cache out of step after an interrupt; starting over")
            cache.clear()
            return 0
        common = 0
        limit = min(len(cache.token_ids), len(prompt) - 1)
        cached = cache.token_ids
        while common < limit and cached[common] == prompt[common]:
            common += 1
        # At least one prompt token must run to produce logits for the first new token.
        cache.truncate(common)
        return common

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        rng: np.random.Generator | None = None,
    ) -> Generator[int, None, None]:
        """Yield generated token ids one by one.

        Stops at an end-of-sequence token (not yielded), after ``max_new_tokens``, or when the
        context window is full. Closing the iterator early is safe; ``last_stats`` then says
        ``cancelled``. Starting another generation closes this one.

        Args:
            prompt_ids: The whole prompt; a prefix already in the cache is not run again.
            max_new_tokens: Upper bound on generated tokens.
            sampling: How tokens are chosen; greedy by default.
            rng: Random generator for sampling; by default one seeded from ``sampling.seed``.

        Raises:
            ChatError: The prompt is empty or does not fit the context window.
        """
        if not prompt_ids:
            raise ChatError("the prompt is empty")
        if self.context_window is not None and len(prompt_ids) > self.context_window:
            raise ChatError(
                f"the prompt has {len(prompt_ids)} tokens; the context window is "
                f"{self.context_window}"
            )
        sampling = sampling or SamplingConfig(temperature=0.0)
        if self._active is not None:
            # Two open generations would interleave their steps in the one cache.
            self._active.close()
        stats = self.last_stats = GenerationStats(prompt_tokens=len(prompt_ids))
        self._active = self._run(list(prompt_ids), max_new_tokens, sampling, rng, stats)
        return self._active

    def _run(
        self,
        prompt: list[int],
        max_new_tokens: int,
        sampling: SamplingConfig,
        rng: np.random.Generator | None,
        stats: GenerationStats,
    ) -> Generator[int, None, None]:
        clock = time.perf_counter
        start = clock()
        try:
            if max_new_tokens <= 0:
                stats.stop_reason = "length"
                return
            model, cache, eos = self.model, self.cache, self.eos_ids
            reused = stats.reused_tokens = self._reuse_prefix(prompt)
            logits = model.forward(cache, prompt[reused:])
            stats.prefill_seconds = clock() - start
            vocab = logits.shape[-1]
            sampler = Sampler(sampling, vocab, rng)
            sampler.observe(prompt)
            limit = self.context_window or (1 << 62)
            token = sampler.next(logits)
            stats.first_token_seconds = clock() - start
            while True:
                if token in eos:
                    stats.stop_reason = "eos"
                    return
                stats.new_tokens += 1
                yield token
                if stats.new_tokens >= max_new_tokens:
                    stats.stop_reason = "length"
                    return
                if len(cache.token_ids) >= limit:
                    stats.stop_reason = "context"
                    return
                step = clock()
                logits = model.forward(cache, (token,))
                token = sampler.next(logits)
                stats.decode_seconds += clock() - step
                stats.decode_steps += 1
        finally:
            if stats.stop_reason == "running":
                stats.stop_reason = "cancelled"
            if stats.first_token_seconds == 0.0:
                stats.first_token_seconds = clock() - start
