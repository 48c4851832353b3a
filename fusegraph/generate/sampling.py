"""`SamplingParams` and the next-token choice: greedy, temperature, top-k, top-p, seeded.

The filters apply in transformers' order: temperature, then top-k, then top-p. Each request
draws from its own `torch.Generator`, so a seeded request samples the same tokens whatever
else shares its batch.

Example:
    >>> params = SamplingParams(max_new_tokens=32, temperature=0.8, top_p=0.9, seed=0)
    >>> rng = params.make_rng("cpu")
    >>> token = sample_token(logits[0], params, rng)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens and when it stops.

    Attributes:
        max_new_tokens: the most tokens to generate (>= 1).
        temperature: 0 picks the most likely token (greedy); > 0 samples from
            `softmax(logits / temperature)`.
        top_k: keep the `top_k` most likely tokens (0: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches `top_p`
            (1.0: all).
        seed: seeds the request's generator (None: a random seed).
        stop_token_ids: a generated token in this set ends the request (it is kept).
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            ("max_new_tokens", _is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "an int >= 1"),
            ("temperature", _is_real(self.temperature) and self.temperature >= 0, "a finite number >= 0"),
            ("top_k", _is_int(self.top_k) and self.top_k >= 0, "an int >= 0 (0: off)"),
            ("top_p", _is_real(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("seed", self.seed is None or _is_int(self.seed), "an int or None"),
            ("stop_token_ids", all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "ints >= 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"SamplingParams: {name} must be {allowed}, got {getattr(self, name)!r}")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        """Whether the next token is simply the most likely one."""
        return self.temperature == 0 or self.top_k == 1

    def make_rng(self, device: torch.device | str) -> torch.Generator:
        """The request's generator on `device`, seeded with `seed` (or randomly)."""
        rng = torch.Generator(device=device)
        if self.seed is None:
            rng.seed()
        else:
            rng.manual_seed(self.seed)
        return rng


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution a sampled token is drawn from: `[vocab]` float32, summing to 1."""
    x = logits.float() / params.temperature
    if 0 < params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
        drop = before >= params.top_p  # the first token is never dropped
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return torch.softmax(x, dim=-1)


def sample_token(logits: torch.Tensor, params: SamplingParams, rng: torch.Generator) -> int:
    """The next token for one request from its `[vocab]` logits."""
    if params.greedy:
        return int(torch.argmax(logits))
    probs = filtered_probs(logits, params)
    if not bool(torch.isfinite(probs).all()):  # else multinomial fails with a device-side assert on CUDA
        raise ValueError(
            f"sample_token: the model's logits are not finite ({int((~torch.isfinite(logits)).sum())} "
            f"of {logits.numel()} entries are NaN or inf)"
        )
    return int(torch.multinomial(probs, 1, generator=rng))


def next_tokens(
    logits: torch.Tensor, rows: list[int], params: list[SamplingParams], rngs: list[torch.Generator]
) -> list[int]:
    """The next token of each `rows[i]` of `logits [B, vocab]`; greedy rows share one argmax."""
    if not rows:
        return []
    best = logits.argmax(dim=-1).tolist() if any(p.greedy for p in params) else []  # one host sync
    return [best[r] if p.greedy else sample_token(logits[r], p, rng) for r, p, rng in zip(rows, params, rngs)]
