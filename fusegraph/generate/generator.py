"""`Generator`: continuous batching over a compiled decoder model and its paged KV cache.

Each `step()` runs the model once on a ragged batch:
- every running request that is decoding adds its last token (1 row);
- requests still in prefill add a chunk of their prompt, and waiting requests join, as long
  as the step's token budget (`max_tokens_per_step`) and `max_batch_size` allow;
- a joining request's prompt is matched against the manager's cached prefix pages, whose
  prefill is skipped;
- when the cache cannot hold the step, the newest request is preempted: its pages are
  released and it waits again at the head of the queue; when it rejoins, its prompt and the
  tokens it generated so far are recomputed (prefix pages still cached are reused).

Requests join (`add_request`) and leave (when they finish) between steps. A request whose
known tokens are all cached after the step samples its next token from the step's logits.
On CUDA, steps that only decode replay CUDA graphs captured per batch-size bucket (the batch
is padded to the bucket with rows writing a private scratch page).

Example:
    >>> model = load_model("tiny-llama")
    >>> manager = model.kv_manager(num_blocks=256)
    >>> gen = Generator(model.compile(256), manager)
    >>> outputs = gen.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=8))
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fusegraph.generate.decode_graphs import DecodeGraphs
from fusegraph.generate.sampling import SamplingParams, next_tokens
from fusegraph.runtime.kv_cache_manager import KVCacheFullError, PagedKVCacheManager

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class TokenEvent:
    """A token a request generated in a step.

    Attributes:
        request_id: the id `add_request` returned.
        token: the new token id.
        finish_reason: None while the request goes on; "stop" (a stop token), "length"
            (`max_new_tokens` or the longest sequence) when this was its last token.
    """

    request_id: int
    token: int
    finish_reason: str | None = None


@dataclass
class _Request:
    id: int
    tokens: list[int]  # the prompt, then the generated tokens
    prompt_len: int
    params: SamplingParams
    rng: torch.Generator
    seq: int | None = None  # the manager's sequence while running
    cached: int = 0  # tokens of `tokens` that are in the cache

    @property
    def output(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class GeneratorStats:
    """Counters of what the generator did."""

    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    preemptions: int = 0
    graph_replays: int = 0


class Generator:
    """Runs many requests through `model` with continuous batching.

    Args:
        model: a compiled decoder graph (`DecoderModel.compile`): `model(tokens int64 [T],
            row_offsets [B+1], kv_blocks, cache_lengths, lookup_table) -> (logits [B, vocab],)`.
        manager: the `PagedKVCacheManager` whose `kv_blocks` the model was compiled for.
        max_batch_size: the most requests in one step.
        max_tokens_per_step: the token budget of a step (prefill chunks are cut to fit).
        max_seq_len: the longest sequence (prompt + output); default: the cache's capacity or
            the model's rope table, the smaller. On CUDA the decode graphs' lookup tables are
            this wide, so a tight bound makes decode steps cheaper.
        cuda_graph_batch_sizes: the buckets for decode CUDA graphs (eager on CUDA only);
            None or () turns them off.
    """

    def __init__(
        self,
        model: Any,
        manager: PagedKVCacheManager,
        *,
        max_batch_size: int = 256,
        max_tokens_per_step: int = 2048,
        max_seq_len: int | None = None,
        cuda_graph_batch_sizes: Sequence[int] | None = DEFAULT_BUCKETS,
    ) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_tokens_per_step", max_tokens_per_step)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Generator: {name} must be an int >= 1, got {value!r}")
        capacity = manager.num_blocks * manager.page_size
        if max_seq_len is not None and (not isinstance(max_seq_len, int) or max_seq_len < 2):
            raise ValueError(f"Generator: max_seq_len must be an int >= 2 (or None), got {max_seq_len!r}")
        rope = _rope_rows(model)
        if max_seq_len is not None and rope is not None and max_seq_len > rope:
            raise ValueError(
                f"Generator: max_seq_len={max_seq_len} passes the model's rope table ({rope} positions); "
                f"use at most {rope}"
            )
        self.model = model
        self.manager = manager
        self.max_batch_size = max_batch_size
        self.max_tokens_per_step = max_tokens_per_step
        self.max_seq_len = max_seq_len or min(capacity, rope or capacity)
        self.device = manager.kv_blocks.device
        self.stats = GeneratorStats()
        self._graphs = DecodeGraphs.for_model(model, cuda_graph_batch_sizes, max_batch_size)
        self._lookup_width = -(-self.max_seq_len // manager.page_size)
        self._ids = itertools.count()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._requests: dict[int, _Request] = {}

    # --- requests ---------------------------------------------------------------------
    def add_request(self, prompt: Sequence[int], params: SamplingParams | None = None) -> int:
        """Queue a request; it joins at the next step with room. Returns its id.

        Raises:
            ValueError: an empty prompt, or one of `max_seq_len` tokens or more.
        """
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("add_request: the prompt is empty; give at least one token")
        if len(prompt) >= self.max_seq_len:
            raise ValueError(
                f"add_request: the prompt has {len(prompt)} tokens; max_seq_len={self.max_seq_len} "
                "leaves no room for a new token"
            )
        params = params or SamplingParams()
        request = _Request(next(self._ids), prompt, len(prompt), params, params.make_rng(self.device))
        self._requests[request.id] = request
        self._waiting.append(request)
        return request.id

    def output(self, request_id: int) -> list[int]:
        """The tokens request `request_id` generated so far."""
        if (request := self._requests.get(request_id)) is None:
            raise ValueError(f"output: unknown request {request_id}; known: {sorted(self._requests)}")
        return request.output

    def cancel(self, request_id: int) -> None:
        """Stop a request between steps (its pages are released); its output stays readable."""
        if (request := self._requests.get(request_id)) is None:
            raise ValueError(f"cancel: unknown request {request_id}; known: {sorted(self._requests)}")
        if request in self._waiting:
            self._waiting.remove(request)
        elif request.seq is not None:
            self.manager.release(request.seq)
            self._running.remove(request)
            request.seq = None

    @property
    def has_unfinished(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self._waiting or self._running)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[list[int]]:
        """Run `prompts` (with the requests already queued) to completion; returns the new
        tokens of each prompt, in order."""
        each = params if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
        ids = [self.add_request(p, q) for p, q in zip(prompts, each, strict=True)]
        for _ in self.stream():
            pass
        return [self.output(i) for i in ids]

    def stream(self) -> Iterator[TokenEvent]:
        """Step until every request finished, yielding each new token as it comes."""
        while self.has_unfinished:
            yield from self.step()

    # --- one step ---------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        """Run one model step over the running requests (admitting waiting ones)."""
        plan = self._schedule()
        if not plan:
            return []
        while True:
            try:
                batch, bucket = self._prepare(plan)
                break
            except KVCacheFullError as err:
                plan = self._preempt_newest(plan, err)
        logits = self._run(plan, batch, bucket)
        self.manager.commit([r.seq for r, _ in plan], [n for _, n in plan])  # type: ignore[misc]
        self.stats.steps += 1
        ready = []
        for row, (request, n) in enumerate(plan):
            request.cached += n
            if request.cached == len(request.tokens):
                ready.append((row, request))
        return self._sample(logits, ready)

    def _plan_running(self, budget: int) -> list[tuple[_Request, int]]:
        """Decodes first, then prefill chunks, oldest first (`_running` is in id order),
        within `budget` tokens."""
        plan: list[tuple[_Request, int]] = []
        prefills = []
        for request in self._running:
            left = len(request.tokens) - request.cached
            if left == 1:
                plan.append((request, 1))
            elif left > 1:
                prefills.append((request, left))
        if len(plan) >= budget:
            return plan[:budget]
        budget -= len(plan)
        for request, left in prefills:
            if budget <= 0:
                break
            plan.append((request, min(left, budget)))
            budget -= plan[-1][1]
        return plan

    def _schedule(self) -> list[tuple[_Request, int]]:
        """The step's (request, new token count) pairs: running requests, then joins."""
        plan = self._plan_running(self.max_tokens_per_step)
        budget = self.max_tokens_per_step - sum(n for _, n in plan)
        while self._waiting and budget > 0 and len(self._running) < self.max_batch_size:
            request = self._waiting.popleft()
            request.seq = self.manager.claim(max_len=self.max_seq_len, prompt=request.tokens)
            request.cached = self.manager.length(request.seq)  # a cached prefix skips its prefill
            bisect.insort(self._running, request, key=_request_id)
            n = min(len(request.tokens) - request.cached, budget)
            plan.append((request, n))
            budget -= n
        return plan

    def _prepare(self, plan: list[tuple[_Request, int]]) -> tuple[Any, int | None]:
        counts = [n for _, n in plan]
        ids = [r.tokens[r.cached : r.cached + n] for r, n in plan] if self.manager.prefix_caching else None
        bucket = self._graphs.bucket(counts) if self._graphs is not None else None
        width = self._lookup_width if bucket is not None else None
        seqs = [r.seq for r, _ in plan]
        batch = self.manager.prepare(seqs, counts, token_ids=ids, pad_to=bucket, lookup_width=width)  # type: ignore[arg-type]
        return batch, bucket

    def _preempt_newest(
        self, plan: list[tuple[_Request, int]], err: KVCacheFullError
    ) -> list[tuple[_Request, int]]:
        """Release the newest running request; it waits again and is recomputed later."""
        victim = self._running[-1]  # the newest: `_running` is in id order
        if len(self._running) == 1:
            m = self.manager
            raise ValueError(
                f"Generator: request {victim.id} alone does not fit in the KV cache: {err}. Its "
                f"{len(victim.tokens)} tokens need {-(-len(victim.tokens) // m.page_size)} of the "
                f"{m.num_blocks} blocks of {m.page_size} tokens; make num_blocks larger"
            ) from err
        self.manager.release(victim.seq)  # type: ignore[arg-type]
        self._running.remove(victim)
        if victim.cached > victim.prompt_len or victim.generated:
            self.stats.preemptions += 1  # it had run (not just joined in this step)
        victim.seq, victim.cached = None, 0
        self._waiting.appendleft(victim)
        plan = [(r, n) for r, n in plan if r is not victim]
        return plan or self._plan_running(self.max_tokens_per_step)

    def _run(self, plan: list[tuple[_Request, int]], batch: Any, bucket: int | None) -> torch.Tensor:
        ids: list[int] = []
        decode = 0
        for r, n in plan:
            ids += r.tokens[r.cached : r.cached + n]
            decode += n == 1 and r.cached + 1 == len(r.tokens) and len(r.tokens) > r.prompt_len
        self.stats.decode_tokens += decode
        self.stats.prefill_tokens += len(ids) - decode
        ids += [0] * ((bucket or 0) - len(plan))  # padding rows
        tokens = torch.tensor(ids, dtype=torch.int64).to(self.device)
        inputs = (tokens, batch.row_offsets, *batch.kv_inputs)
        if bucket is not None and self._graphs is not None:
            self.stats.graph_replays += 1
            return self._graphs.run(inputs)[0]  # the module's outputs, then the cache buffer
        logits: torch.Tensor = self.model(*inputs)[0]
        return logits

    def _sample(self, logits: torch.Tensor, ready: list[tuple[int, _Request]]) -> list[TokenEvent]:
        rows = [row for row, _ in ready]
        chosen = next_tokens(logits, rows, [r.params for _, r in ready], [r.rng for _, r in ready])
        events = []
        for (_, request), token in zip(ready, chosen):
            request.tokens.append(token)
            reason = None
            if token in request.params.stop_token_ids:
                reason = "stop"
            elif (
                request.generated >= request.params.max_new_tokens or len(request.tokens) >= self.max_seq_len
            ):
                reason = "length"
            if reason is not None:
                self.manager.release(request.seq)  # type: ignore[arg-type]
                self._running.remove(request)
                request.seq = None
            events.append(TokenEvent(request.id, token, reason))
        return events


def _request_id(request: _Request) -> int:
    return request.id


def _rope_rows(model: Any) -> int | None:
    """Rows of the model's rope table (`rope.freqs_cis`), if the compiled graph shows it."""
    weights = getattr(getattr(model, "graph", None), "weights", None) or {}
    if (t := weights.get("rope.freqs_cis")) is None or not t.shape[0].is_static:
        return None
    return int(t.shape[0].value)
