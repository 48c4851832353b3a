"""Generator: continuous batching equals transformers' generate per prompt; prefix sharing,
preemption and chunked prefill leave the tokens unchanged; stop tokens and max_new_tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusegraph.generate import Generator, SamplingParams
from fusegraph.generate.decode_graphs import DecodeGraphs
from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager
from tests.generate.conftest import Tiny

PROMPTS = [[5, 17, 3, 88, 41, 9, 23], [60, 2], [7, 7, 31, 64, 12, 90, 45, 33, 1, 2, 3, 4, 5, 6, 70, 71, 8]]
NEW = 12


def _staggered(gen: Generator, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Prompt i joins after i * 2 steps, while the earlier ones are running."""
    ids = []
    for p in prompts:
        ids.append(gen.add_request(p, SamplingParams(max_new_tokens=n)))
        gen.step()
        gen.step()
    for _ in gen.stream():
        pass
    return [gen.output(i) for i in ids]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen3"])
def test_generator__staggered_batch_equals_transformers_generate_per_prompt(
    family: str, request: pytest.FixtureRequest
) -> None:
    tiny: Tiny = request.getfixturevalue(family)
    gen = Generator(tiny.compiled, tiny.manager(), max_tokens_per_step=8)  # prefill in chunks
    got = _staggered(gen, PROMPTS, NEW)
    want = [tiny.reference(p, NEW) for p in PROMPTS]
    assert got == want
    assert len({tuple(w) for w in want}) == 3 and sum(len(set(w)) > 2 for w in want) >= 2  # not degenerate
    assert gen.stats.steps > 2 * len(PROMPTS) and gen.manager.free_blocks == tiny.num_blocks


def test_generator__prefix_sharing_gives_the_same_tokens_as_none(tiny_llama: Tiny) -> None:
    shared = [PROMPTS[2][:12] + [i, i + 1] for i in (20, 40, 50)]  # 12 common tokens = 3 pages
    outputs = {}
    for caching in (True, False):
        manager = tiny_llama.manager(prefix_caching=caching)
        gen = Generator(tiny_llama.compiled, manager)
        first = gen.generate(shared[:1], SamplingParams(max_new_tokens=6))
        outputs[caching] = first + _staggered(gen, shared[1:], 6)
        assert (manager.prefix_hit_tokens > 0) == caching
    assert outputs[True] == outputs[False] == [tiny_llama.reference(p, 6) for p in shared]


def _small_cache(tiny: Tiny, num_blocks: int) -> tuple[object, PagedKVCacheManager]:
    compiled = tiny.model.compile(num_blocks)  # the graph's kv_blocks has num_blocks pages
    return compiled, PagedKVCacheManager(tiny.model.kv_params, num_blocks)


def test_generator__a_full_cache_preempts_the_newest_and_recovers(tiny_llama: Tiny) -> None:
    # The requests need 5 + 4 + 8 pages of 4 tokens at their longest; the cache has 9.
    compiled, manager = _small_cache(tiny_llama, 9)
    gen = Generator(compiled, manager)
    got = gen.generate(PROMPTS, SamplingParams(max_new_tokens=NEW))
    assert gen.stats.preemptions > 0 and manager.free_blocks == 9
    assert got == [tiny_llama.reference(p, NEW) for p in PROMPTS]


def test_generator__a_request_too_long_for_the_cache_is_refused_by_name(tiny_llama: Tiny) -> None:
    compiled, manager = _small_cache(tiny_llama, 3)
    gen = Generator(compiled, manager, max_seq_len=40)
    with pytest.raises(ValueError, match=r"Generator: request 0 alone does not fit in the KV cache: prepare"):
        gen.generate([PROMPTS[2]])


def test_generator__stop_tokens_and_max_new_tokens_end_a_request(tiny_llama: Tiny) -> None:
    want = tiny_llama.reference(PROMPTS[0], NEW)
    stop = want[3]
    gen = Generator(tiny_llama.compiled, tiny_llama.manager())
    events = []
    a = gen.add_request(PROMPTS[0], SamplingParams(max_new_tokens=NEW, stop_token_ids=(stop,)))
    b = gen.add_request(PROMPTS[1], SamplingParams(max_new_tokens=2))
    events = list(gen.stream())
    assert gen.output(a) == want[: want.index(stop) + 1]
    assert len(gen.output(b)) == 2
    finished = {e.request_id: e.finish_reason for e in events if e.finish_reason}
    assert finished == {a: "stop", b: "length"}


def test_generator__a_cancelled_request_leaves_and_the_others_go_on(tiny_llama: Tiny) -> None:
    gen = Generator(tiny_llama.compiled, tiny_llama.manager())
    a, b, c = (gen.add_request(p, SamplingParams(max_new_tokens=NEW)) for p in PROMPTS)
    gen.step()
    gen.step()
    gen.cancel(a)  # running
    gen.cancel(c)  # running too (joined in the first step)
    for _ in gen.stream():
        pass
    assert gen.output(b) == tiny_llama.reference(PROMPTS[1], NEW)
    assert len(gen.output(a)) == 2 and gen.manager.free_blocks == tiny_llama.num_blocks
    assert gen.step() == []  # nothing left to run


def test_generator__seeded_sampling_does_not_depend_on_the_batch(tiny_llama: Tiny) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=1.5, top_k=20, top_p=0.9, seed=123)
    alone = Generator(tiny_llama.compiled, tiny_llama.manager()).generate([PROMPTS[0]], params)
    gen = Generator(tiny_llama.compiled, tiny_llama.manager())
    batched = gen.generate([PROMPTS[1], PROMPTS[0]], [SamplingParams(max_new_tokens=3), params])
    assert batched[1] == alone[0]
    other = Generator(tiny_llama.compiled, tiny_llama.manager()).generate(
        [PROMPTS[0]], SamplingParams(max_new_tokens=8, temperature=1.5, top_k=20, top_p=0.9, seed=124)
    )
    assert other != alone  # the seed matters


def test_generator__refuses_bad_requests_and_settings(tiny_llama: Tiny) -> None:
    gen = Generator(tiny_llama.compiled, tiny_llama.manager(), max_seq_len=10)
    with pytest.raises(ValueError, match="add_request: the prompt is empty"):
        gen.add_request([])
    with pytest.raises(ValueError, match="the prompt has 10 tokens; max_seq_len=10 leaves no room"):
        gen.add_request(list(range(10)))
    with pytest.raises(ValueError, match="Generator: max_tokens_per_step must be an int >= 1, got 0"):
        Generator(tiny_llama.compiled, tiny_llama.manager(), max_tokens_per_step=0)
    with pytest.raises(ValueError, match=r"max_seq_len=97 passes the model's rope table \(96 positions\)"):
        Generator(tiny_llama.compiled, tiny_llama.manager(), max_seq_len=97)
    with pytest.raises(ValueError, match="output: unknown request 7"):
        gen.output(7)
    assert gen.generate([[1, 2, 3, 4, 5, 6, 7, 8]], SamplingParams(max_new_tokens=50)) == [
        tiny_llama.reference([1, 2, 3, 4, 5, 6, 7, 8], 2)
    ]  # the longest sequence ends it


class _CpuRunner:
    """`CudaGraphRunner.run_bound` without CUDA: runs the metadata checks (what the device
    check refuses inside a replay on CUDA), then the step on the bound tensors."""

    def __init__(self, compiled: Any) -> None:
        self.step, self.checks = compiled._step, compiled._input_checks
        self.calls: list[tuple[int, tuple[int, ...], int]] = []

    def run_bound(self, inputs: list[torch.Tensor], dims: dict[str, int]) -> Any:
        self.calls.append((int(inputs[0].shape[0]), tuple(inputs[4].shape), inputs[0].data_ptr()))
        self.checks.check(inputs, dims)  # padding rows must not share a block
        return self.step(inputs, dims)


def test_generator__padded_decode_buckets_give_the_same_tokens(tiny_llama: Tiny) -> None:
    # The CUDA-graph decode path on the CPU: padded to buckets, replayed on per-bucket tensors.
    gen = Generator(tiny_llama.compiled, tiny_llama.manager(), cuda_graph_batch_sizes=None, max_seq_len=48)
    graphs = object.__new__(DecodeGraphs)
    graphs.model, graphs.buckets, graphs._static = tiny_llama.compiled, [1, 4, 8], {}
    graphs.runner = runner = _CpuRunner(tiny_llama.compiled)  # type: ignore[assignment]
    gen._graphs = graphs
    got = _staggered(gen, PROMPTS, NEW)
    assert got == [tiny_llama.reference(p, NEW) for p in PROMPTS]
    assert gen.stats.graph_replays == len(runner.calls) > 0
    assert {(rows, lut) for rows, lut, _ in runner.calls} == {(1, (1, 12)), (4, (4, 12))}  # 48 / 4 pages wide
    assert len({ptr for *_, ptr in runner.calls}) == 2  # one set of static tensors per bucket
