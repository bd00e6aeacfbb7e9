"""Next-token selection from logits: repetition penalty, temperature, top-k, top-p, seeded draws.

Pure numpy on one logits vector at a time. The order follows the usual convention: repetition
penalty, then temperature, then top-k, then top-p; temperature 0 means greedy (argmax after the
penalty). This module must not run models or know about tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .errors import ChatError

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen.

    Attributes:
        temperature: Divides the logits; 0 selects the most likely token (greedy).
        top_k: Keep only the ``top_k`` most likely tokens (ties at the boundary are kept);
            0 disables.
        top_p: Keep the smallest set of most likely tokens whose mass reaches ``top_p``;
            1.0 disables.
        repetition_penalty: Logits of tokens already in the context are divided by this when
            positive and multiplied by it when negative; 1.0 disables.
        seed: Seed of the numpy random generator; None draws fresh entropy.
    """

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise ChatError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ChatError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ChatError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0.0 and np.isfinite(self.repetition_penalty)):
            raise ChatError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """True when the choice is deterministic (temperature 0)."""
        return self.temperature == 0.0


def apply_repetition_penalty(
    logits: NDArray[np.floating], seen: NDArray[np.bool_], penalty: float
) -> FloatArray:
    """Penalise tokens already seen.

    Args:
        logits: One logits vector.
        seen: Boolean mask over the vocabulary, True for tokens in the context.
        penalty: Divides positive and multiplies negative logits of seen tokens.

    Returns:
        A new float64 vector; ``logits`` is left untouched.
    """
    out = logits.astype(np.float64)
    if penalty != 1.0:
        picked = out[seen]
        out[seen] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def apply_top_k(logits: FloatArray, k: int) -> FloatArray:
    """Set every logit below the ``k``-th largest to -inf, in place; returns ``logits``."""
    if 0 < k < logits.size:
        kth = np.partition(logits, logits.size - k)[logits.size - k]
        logits[logits < kth] = -np.inf
    return logits


def softmax(logits: FloatArray) -> FloatArray:
    """Probabilities from logits (``-inf`` gives exactly 0)."""
    shifted = np.exp(logits - np.max(logits))
    total: np.float64 = shifted.sum()
    return shifted / total


def apply_top_p(probs: FloatArray, p: float) -> FloatArray:
    """Keep the most likely tokens until their mass reaches ``p``; renormalised copy.

    A token is kept when the mass of the tokens ranked strictly above it is below ``p``, so the
    most likely token always survives. Equal probabilities rank by token id.
    """
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    ranked = probs[order]
    before = np.cumsum(ranked) - ranked
    kept = order[before < p]
    out = np.zeros_like(probs)
    out[kept] = probs[kept]
    total: np.float64 = out.sum()
    return out / total


def token_probabilities(
    logits: NDArray[np.floating], config: SamplingConfig, seen: NDArray[np.bool_] | None = None
) -> FloatArray:
    """The distribution the next token is drawn from.

    Args:
        logits: One logits vector.
        config: Sampling settings; with temperature 0 the result is one-hot on the argmax.
        seen: Mask of tokens already in the context, for the repetition penalty.

    Returns:
        A float64 probability vector summing to 1.
    """
    if seen is None:
        seen = np.zeros(logits.shape, dtype=np.bool_)
    scores = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.greedy:
        out = np.zeros_like(scores)
        out[int(np.argmax(scores))] = 1.0
        return out
    scores /= config.temperature
    apply_top_k(scores, config.top_k)
    return apply_top_p(softmax(scores), config.top_p)


class Sampler:
    """Draws tokens one at a time, tracking which tokens the context already holds.

    Args:
        config: Sampling settings.
        vocab_size: Length of the logits vectors.
        rng: Random generator; by default one seeded with ``config.seed``.
    """

    def __init__(
        self, config: SamplingConfig, vocab_size: int, rng: np.random.Generator | None = None
    ) -> None:
        self.config = config
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self._seen = np.zeros(vocab_size, dtype=np.bool_)
        self._track = config.repetition_penalty != 1.0

    def observe(self, token_ids: Iterable[int]) -> None:
        """Record tokens that entered the context (prompt or generated)."""
        if self._track:
            ids = np.fromiter(token_ids, dtype=np.int64)
            self._seen[ids[(ids >= 0) & (ids < self._seen.size)]] = True

    def next(self, logits: NDArray[np.floating]) -> int:
        """Choose the next token from one logits vector and record it as seen."""
        config = self.config
        if config.greedy and not self._track:
            token = int(np.argmax(logits))
        elif config.greedy:
            token = int(
                np.argmax(apply_repetition_penalty(logits, self._seen, config.repetition_penalty))
            )
        else:
            probs = token_probabilities(logits, config, self._seen)
            cdf = np.cumsum(probs)
            token = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
            token = min(token, probs.size - 1)
        if self._track and token < self._seen.size:
            self._seen[token] = True
        return token
