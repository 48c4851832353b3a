"""Bad runtime metadata x {eager, IREE} x {fused, unfused}: every backend refuses every case
before writing anything, with the same message, and the whole KV cache stays byte-identical.

One IREE compile per graph per module (1 layer, tiny shapes). A good call on the same inputs
shape runs on both backends, so the refusals are not an artefact of a broken setup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, TensorType, ops
from fusegraph.nn import GPTQLinear, QuantizationConfig
from fusegraph.nn.checkpoint import quantize_gptq_projections
from tests.lowering._graphs import SMALL, gptq_attention_graph, gptq_attention_weights, kv_input_types
from tests.runtime.bad_input_cases import (
    CASES,
    U32,
    Call,
    good_call,
    message_for,
    sentinel_cache,
    strided_cache,
)

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "unfused"])
def backends(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    graph = gptq_attention_graph(1, fused=request.param)
    weights = gptq_attention_weights(graph)
    cache_dir = tmp_path_factory.mktemp("iree")
    return SimpleNamespace(
        fused=request.param,
        eager=fusegraph.compile(graph, backend="eager", device="cpu", weights=weights, pipeline=None),
        iree=fusegraph.compile(
            graph, backend="iree", device="cpu", weights=weights, cache_dir=cache_dir, pipeline=None
        ),
    )


def _refusal(
    model: Callable[..., tuple[torch.Tensor, ...]], call: Call
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(the error message, the cache before, the cache after) for a refused call."""
    cache = call.kv() if call.kv is not None else sentinel_cache()
    before = cache.clone()
    with pytest.raises(ValueError) as info:
        model(*call.inputs(cache))
    return str(info.value), before, cache


@pytest.mark.parametrize("case", list(CASES))
def test_every_backend_refuses_bad_metadata_alike_and_writes_nothing(
    backends: SimpleNamespace, case: str
) -> None:
    call, pattern = CASES[case]
    messages = {}
    for name in ("eager", "iree"):
        message, before, after = _refusal(getattr(backends, name), call)
        assert re.search(message_for(pattern, backends.fused), message), f"{name}: {message}"
        assert torch.equal(before.view(torch.int32), after.view(torch.int32)), f"{name} wrote the cache"
        messages[name] = message
    assert messages["eager"] == messages["iree"]


def test_the_good_call_runs_on_both_backends_and_writes_only_its_rows(backends: SimpleNamespace) -> None:
    call = good_call()
    results = {}
    for name in ("eager", "iree"):
        cache = sentinel_cache()
        (y,) = getattr(backends, name)(*call.inputs(cache))
        results[name] = (y, cache)
    torch.testing.assert_close(results["iree"][0], results["eager"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results["iree"][1], results["eager"][1], atol=1e-5, rtol=1e-5)
    # Sequence 0 writes positions 5..7 (block 1, slots 1..3), sequence 1 position 2 (block 4, slot 2).
    changed = (results["iree"][1] != sentinel_cache()).flatten(4).any(-1)  # [blocks, 2, layers, slots]
    written = {(b, s) for b, _, _, s in changed.nonzero().tolist()}
    assert written == {(1, 1), (1, 2), (1, 3), (4, 2)}


# --- weights: g_idx range and finite scales, checked once when weights are bound ---------
def _act_order_layer() -> tuple[fusegraph.Graph, GPTQLinear, dict[str, torch.Tensor]]:
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    layer = GPTQLinear(64, 32, cfg)
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    state = {k.removeprefix("p."): v for k, v in quantize_gptq_projections({"p": weight}, cfg).items()}
    with fusegraph.Graph(
        "act_order", input_types=[TensorType(DType.float32, ["m", 64], DeviceRef.CPU())]
    ) as g:
        g.output(layer(g.inputs[0]))
    return g, layer, state


def _compile(
    graph: fusegraph.Graph, backend: str, weights: dict[str, torch.Tensor], cache_dir: object
) -> Any:
    options: dict[str, Any] = {"cache_dir": cache_dir} if backend == "iree" else {}
    return fusegraph.compile(graph, backend=backend, device="cpu", weights=weights, **options)


@pytest.mark.parametrize("bad", [2, -1], ids=["past-groups", "negative"])
@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_a_g_idx_out_of_range_is_refused_when_weights_are_bound(
    backend: str, bad: int, tmp_path: Path
) -> None:
    graph, layer, state = _act_order_layer()
    state["g_idx"] = state["g_idx"].clone()
    state["g_idx"][7] = bad
    layer.load_state_dict(state)  # shapes and dtypes are right: the values are checked at bind
    message = rf"weight 'g_idx': g_idx entries must lie in \[0, 2\) .*entry 7 is {bad}"
    for weights in (layer.state_dict(), state):
        with pytest.raises(ValueError, match=message):
            _compile(graph, backend, weights, tmp_path)


@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_non_finite_scales_are_refused_when_weights_are_bound(backend: str, tmp_path: Path) -> None:
    graph, _, state = _act_order_layer()
    state["scales"] = state["scales"].clone()
    state["scales"][1, 3] = float("nan")
    with pytest.raises(
        ValueError, match=r"weight 'scales': scales must be finite, but entry \[1, 3\] is nan"
    ):
        _compile(graph, backend, state, tmp_path)


def test_the_ops_own_store_check_names_short_row_offsets_and_a_strided_cache() -> None:
    x = torch.randn(3, SMALL.n_kv_heads, SMALL.head_dim)
    lengths, lookup = torch.zeros(2, dtype=U32), torch.tensor([[0], [1]], dtype=U32)
    with pytest.raises(
        ValueError, match=r"kv_cache_store_: input_row_offsets has 2 entries .*batch \+ 1 = 3"
    ):
        torch.ops.fusegraph.kv_cache_store_(
            sentinel_cache(), x, torch.tensor([0, 3], dtype=U32), lengths, lookup, 0, 0
        )
    with pytest.raises(ValueError, match=r"kv_cache_store_: kv_blocks must be contiguous"):
        ro = torch.tensor([0, 3, 3], dtype=U32)
        torch.ops.fusegraph.kv_cache_store_(strided_cache(), x, ro, lengths, lookup, 0, 0)


def test_iree_refuses_a_graph_whose_metadata_it_cannot_check_before_running(tmp_path: Path) -> None:
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SMALL.n_kv_heads, SMALL.head_dim], DeviceRef.CPU()),
        TensorType(DType.uint32, ["batch_plus_1"], DeviceRef.CPU()),
        *kv_input_types(1),
    ]
    with fusegraph.Graph("computed_lengths", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        lengths = ops.add(lengths, lengths)
        kv = ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        g.output(ops.paged_attention(x, ro, kv, lengths, lookup, layer_idx=0, scale=0.25))
    with pytest.raises(ValueError, match=r"fg.kv_cache.store: cache_lengths is computed inside the graph"):
        _compile(g, "iree", {}, tmp_path)
    _compile(g, "eager", {}, tmp_path)  # eager CPU: the op checks its own operands when it runs


@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_a_dim_the_inputs_make_negative_is_refused_before_running(backend: str, tmp_path: Path) -> None:
    # `x[11:]` has n - 11 rows: valid for n >= 11, so only the call can refuse it
    with fusegraph.Graph("tail", input_types=[TensorType(DType.float32, ["n", 4], DeviceRef.CPU())]) as g:
        g.output(ops.mul(g.inputs[0][11:], g.inputs[0][11:]))
    model = _compile(g, backend, {}, tmp_path)
    (y,) = model(torch.ones(13, 4))
    assert y.shape == (2, 4)
    message = (
        r"^dim n - 11 \(fg.slice result 0 dim 0\) is -3 with n = 8: below zero; the inputs are too "
        r"small for the graph"
    )
    with pytest.raises(ValueError, match=message):
        model(torch.ones(8, 4))
    (y,) = model(torch.ones(11, 4))
    assert y.shape == (0, 4)
