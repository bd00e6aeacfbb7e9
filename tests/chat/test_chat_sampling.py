"""Sampling on fixed logits: expected distributions are computed by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_build.chat.errors import ChatError
from ane_build.chat.sampling import Sampler, SamplingConfig, token_probabilities


def hand_softmax(values: list[float]) -> list[float]:
    exps = [0.0 if v == -math.inf else math.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def seen_mask(size: int, *ids: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[list(ids)] = True
    return mask


LOGITS = np.array([1.0, 3.0, 2.0, 0.5], dtype=np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"repetition_penalty": 0.0},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ChatError):
        SamplingConfig(**kwargs)  # type: ignore[arg-type]


def test_temperature_zero_is_one_hot_on_the_argmax() -> None:
    probs = token_probabilities(LOGITS, SamplingConfig(temperature=0.0))
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_temperature_zero_sampler_ignores_the_seed() -> None:
    picks = {
        Sampler(SamplingConfig(temperature=0.0, seed=seed), 4).next(LOGITS) for seed in range(20)
    }
    assert picks == {1}


def test_temperature_scales_logits() -> None:
    probs = token_probabilities(LOGITS, SamplingConfig(temperature=0.5))
    expected = hand_softmax([2.0, 6.0, 4.0, 1.0])
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_temperature_one_is_plain_softmax() -> None:
    probs = token_probabilities(LOGITS, SamplingConfig(temperature=1.0))
    np.testing.assert_allclose(probs, hand_softmax([1.0, 3.0, 2.0, 0.5]), rtol=1e-12)


def test_top_k_keeps_the_k_largest() -> None:
    probs = token_probabilities(LOGITS, SamplingConfig(temperature=1.0, top_k=2))
    e3, e2 = math.exp(3.0), math.exp(2.0)
    np.testing.assert_allclose(probs, [0.0, e3 / (e3 + e2), e2 / (e3 + e2), 0.0], rtol=1e-12)


def test_top_k_keeps_ties_at_the_boundary() -> None:
    logits = np.array([2.0, 2.0, 1.0])
    probs = token_probabilities(logits, SamplingConfig(temperature=1.0, top_k=1))
    np.testing.assert_allclose(probs, [0.5, 0.5, 0.0], rtol=1e-12)


def test_top_k_larger_than_vocab_changes_nothing() -> None:
    probs = token_probabilities(LOGITS, SamplingConfig(temperature=1.0, top_k=10))
    np.testing.assert_allclose(probs, hand_softmax([1.0, 3.0, 2.0, 0.5]), rtol=1e-12)


# Logits whose softmax is exactly [0.5, 0.3, 0.15, 0.05] (up to rounding).
P_LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.4, [1.0, 0.0, 0.0, 0.0]),
        (0.75, [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]),
        (0.85, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (1.0, [0.5, 0.3, 0.15, 0.05]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, expected: list[float]) -> None:
    probs = token_probabilities(P_LOGITS, SamplingConfig(temperature=1.0, top_p=top_p))
    np.testing.assert_allclose(probs, expected, rtol=1e-9, atol=1e-12)


def test_top_p_applies_after_temperature() -> None:
    # At temperature 2 the probabilities flatten to sqrt(p) / sum(sqrt(p)).
    roots = [math.sqrt(p) for p in (0.5, 0.3, 0.15, 0.05)]
    flat = [r / sum(roots) for r in roots]
    assert flat[0] < 0.5 < flat[0] + flat[1]
    # At temperature 1 the top token alone already holds 0.5.
    cold = token_probabilities(P_LOGITS, SamplingConfig(temperature=1.0, top_p=0.5))
    np.testing.assert_allclose(cold, [1.0, 0, 0, 0], atol=1e-12)
    probs = token_probabilities(P_LOGITS, SamplingConfig(temperature=2.0, top_p=0.5))
    kept = flat[0] + flat[1]
    np.testing.assert_allclose(probs, [flat[0] / kept, flat[1] / kept, 0, 0], rtol=1e-9)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([2.0, -1.0, 0.5, 1.0])
    config = SamplingConfig(temperature=1.0, repetition_penalty=2.0)
    probs = token_probabilities(logits, config, seen_mask(4, 0, 1))
    np.testing.assert_allclose(probs, hand_softmax([1.0, -2.0, 0.5, 1.0]), rtol=1e-12)


def test_repetition_penalty_changes_the_greedy_choice() -> None:
    logits = np.array([2.0, 1.5])
    plain = Sampler(SamplingConfig(temperature=0.0), 2)
    assert plain.next(logits) == 0
    penalised = Sampler(SamplingConfig(temperature=0.0, repetition_penalty=2.0), 2)
    penalised.observe([0])
    assert penalised.next(logits) == 1


def test_sampler_tracks_generated_tokens_for_the_penalty() -> None:
    sampler = Sampler(SamplingConfig(temperature=0.0, repetition_penalty=4.0), 3)
    logits = np.array([3.0, 2.0, 1.0])
    # 0 is chosen, then penalised to 0.75, so 1 (2.0) wins, then 2 (1.0 vs 0.75 and 0.5).
    assert [sampler.next(logits) for _ in range(3)] == [0, 1, 2]


def test_penalty_then_temperature_then_top_k_then_top_p() -> None:
    logits = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    config = SamplingConfig(temperature=2.0, top_k=3, top_p=0.6, repetition_penalty=2.0)
    probs = token_probabilities(logits, config, seen_mask(5, 0))
    # Penalty: [2, 3, 2, 1, 0]; temperature: [1, 1.5, 1, .5, 0]; top-3 keeps ids 1, 0, 2
    # (the two 1.0 tie at the boundary and both stay).
    e15, e1 = math.exp(1.5), math.exp(1.0)
    total = e15 + 2 * e1
    ranked = [e15 / total, e1 / total, e1 / total]  # ids 1, 0, 2; ties rank by id
    assert ranked[0] < 0.6 < ranked[0] + ranked[1]
    kept = ranked[0] + ranked[1]
    np.testing.assert_allclose(probs, [ranked[1] / kept, ranked[0] / kept, 0, 0, 0], rtol=1e-9)


def test_same_seed_same_draws_and_other_seed_other_draws() -> None:
    logits = np.linspace(0.0, 1.0, 50)

    def draws(seed: int) -> list[int]:
        sampler = Sampler(SamplingConfig(temperature=1.0, seed=seed), 50)
        return [sampler.next(logits) for _ in range(40)]

    assert draws(1234) == draws(1234)
    assert draws(1234) != draws(4321)


def test_draws_follow_the_distribution() -> None:
    sampler = Sampler(SamplingConfig(temperature=1.0, seed=5), 4)
    counts = np.bincount([sampler.next(P_LOGITS) for _ in range(20000)], minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_zero_probability_tokens_are_never_drawn() -> None:
    sampler = Sampler(SamplingConfig(temperature=1.0, top_k=2, seed=9), 4)
    assert {sampler.next(LOGITS) for _ in range(500)} == {1, 2}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=30),
    st.floats(0.05, 1.0),
    st.integers(0, 35),
)
def test_filtered_distribution_invariants(values: list[float], top_p: float, top_k: int) -> None:
    logits = np.array(values)
    probs = token_probabilities(logits, SamplingConfig(temperature=1.0, top_k=top_k, top_p=top_p))
    assert probs.sum() == pytest.approx(1.0)
    base = token_probabilities(logits, SamplingConfig(temperature=1.0))
    assert probs[int(np.argmax(base))] > 0
    kept = probs > 0
    if 0 < top_k < len(values):
        kth = np.sort(logits)[-top_k]
        assert kept.sum() <= (logits >= kth).sum()
    # Kept tokens are always at least as likely as dropped ones.
    if (~kept).any():
        assert base[kept].min() >= base[~kept].max()
