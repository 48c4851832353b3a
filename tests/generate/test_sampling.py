"""Sampling: the filtered distribution against the math, seeded draws, and refused settings."""

from __future__ import annotations

import math

import pytest
import torch

from fusegraph.generate.sampling import SamplingParams, filtered_probs, next_tokens, sample_token

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_sampling__temperature_top_k_top_p_follow_the_math() -> None:
    t = 2.0
    full = _softmax([x / t for x in LOGITS.tolist()])
    got = filtered_probs(LOGITS, SamplingParams(temperature=t))
    torch.testing.assert_close(got, torch.tensor(full), rtol=1e-6, atol=1e-7)
    # top-k 3 keeps logits 3.0, 2.0, 1.0 (ids 5, 0, 1)
    kept = _softmax([LOGITS[i].item() / t for i in (5, 0, 1)])
    want = torch.zeros(6)
    want[[5, 0, 1]] = torch.tensor(kept)
    torch.testing.assert_close(filtered_probs(LOGITS, SamplingParams(temperature=t, top_k=3)), want)
    # top-p: the smallest most-likely set whose mass reaches p
    order = sorted(range(6), key=lambda i: -full[i])
    p = full[order[0]] + full[order[1]] - 1e-3  # needs exactly two tokens
    got = filtered_probs(LOGITS, SamplingParams(temperature=t, top_p=p))
    assert (got > 0).nonzero().flatten().tolist() == sorted(order[:2])
    top1 = filtered_probs(LOGITS, SamplingParams(temperature=t, top_p=1e-6))
    assert top1.tolist() == [0, 0, 0, 0, 0, 1.0]  # the most likely token always stays


def test_sampling__draws_follow_the_distribution_and_the_seed() -> None:
    params = SamplingParams(temperature=1.0, seed=7)
    rng = params.make_rng("cpu")
    draws = [sample_token(LOGITS, params, rng) for _ in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=6).double() / len(draws)
    torch.testing.assert_close(
        freq, torch.tensor(_softmax(LOGITS.tolist()), dtype=torch.float64), atol=0.03, rtol=0
    )
    again = params.make_rng("cpu")
    assert [sample_token(LOGITS, params, again) for _ in range(50)] == draws[:50]


def test_sampling__greedy_rows_take_the_argmax() -> None:
    logits = torch.stack([LOGITS, -LOGITS, LOGITS.flip(0)])
    greedy, top1 = SamplingParams(), SamplingParams(temperature=0.7, top_k=1)
    rngs = [greedy.make_rng("cpu")] * 2
    assert next_tokens(logits, [0, 2], [greedy, top1], rngs) == [5, 0]
    assert next_tokens(logits, [], [], []) == []


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("max_new_tokens", 0, "an int >= 1"),
        ("temperature", -0.5, "a finite number >= 0"),
        ("temperature", float("nan"), "a finite number >= 0"),
        ("top_k", 2.5, r"an int >= 0 \(0: off\)"),
        ("top_p", 0.0, r"a number in \(0, 1\]"),
        ("seed", "1", "an int or None"),
        ("stop_token_ids", (1, -2), "ints >= 0"),
    ],
)
def test_sampling__refuses_bad_settings_naming_the_field(field: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"SamplingParams: {field} must be {allowed}, got"):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


def test_sampling__non_finite_logits_are_refused_by_name() -> None:
    params = SamplingParams(temperature=1.0, seed=0)
    bad = LOGITS.clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match=r"sample_token: the model's logits are not finite \(1 of 6 entries"):
        sample_token(bad, params, params.make_rng("cpu"))
