"""The IREE path updates the KV cache in place: the emitted torch-mlir overwrites the mutable
cache argument and does not return it (FileCheck); at run time the caller's tensor is written
directly (only the step's rows change, no copy back, no transfers: counted, never timed); the
entry-barrier rewrite that removes IREE's dead whole-cache copy, and when it applies."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
from fusegraph.runtime.iree_backend import compile_iree
from fusegraph.runtime.iree_inplace import (
    barrier_rewrite_safe,
    drop_aliases_from_barrier,
    outputs_follow_writes,
)
from tests.lowering._graphs import SMALL, AttnShape, gptq_attention_graph, kv_input_types

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

FILECHECK = Path(sys.executable).with_name("filecheck")
CPU = DeviceRef.CPU()


def test_the_lowering_overwrites_the_mutable_cache_and_returns_only_the_outputs(tmp_path: Path) -> None:
    graph = gptq_attention_graph(1, fused=False)  # two stores (K, V) then the attention
    text = to_torch_mlir(graph, mode="decomposed", inplace_buffers=True).text
    checks = tmp_path / "checks.txt"
    checks.write_text(
        "\n".join(
            [
                "CHECK: func.func @main(%arg0: !torch.vtensor<[?,64],f32>, %arg1: !torch.vtensor<[?],ui32>, "
                "%arg2: !torch.tensor<[24,2,1,4,2,16],f32>, %arg3: !torch.vtensor<[?],ui32>, "
                "%arg4: !torch.vtensor<[?,?],ui32>,",
                "CHECK-SAME: -> !torch.vtensor<[?,64],f32>",
                "CHECK-NEXT: %[[KV:.+]] = torch.copy.to_vtensor %arg2 : !torch.vtensor<[24,2,1,4,2,16],f32>",
                "CHECK-NOT: torch.copy.to_vtensor",
                "CHECK: torch.overwrite.tensor.contents %{{.+}} overwrites %arg2",
                "CHECK-NOT: torch.overwrite.tensor.contents",
                "CHECK: return %{{[0-9]+}} : !torch.vtensor<[?,64],f32>",
                "CHECK-NEXT: }",
            ]
        )
    )
    proc = subprocess.run(
        [str(FILECHECK), str(checks)], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # What IreeCompiledGraph compiles: the output too is a trailing mutable argument (after the
    # 5 inputs and 7 weights), overwritten, and nothing is returned.
    args = to_torch_mlir(graph, mode="decomposed", inplace_buffers=True, outputs_as_args=True)
    assert re.search(r"%arg12: !torch.tensor<\[\?,64\],f32>\) attributes", args.text), args.text[:600]
    assert re.search(r"torch.overwrite.tensor.contents %\d+ overwrites %arg12 ", args.text)
    assert re.search(r"(?m)^\s+return$", args.text)
    # The functional form returns the cache and has no overwrite.
    functional = to_torch_mlir(graph, mode="decomposed").text
    assert (
        "overwrite" not in functional
        and "-> (!torch.vtensor<[?,64],f32>, !torch.vtensor<[24,2,1" in functional
    )


def _store_graph(num_blocks: int) -> Graph:
    """Store K = V = x into a cache of `num_blocks` blocks, then attend with q = x (so the
    output depends on the writes, as in every attention layer)."""
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SMALL.n_kv_heads, SMALL.head_dim], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *kv_input_types(1, AttnShape(num_blocks=num_blocks)),
    ]
    with Graph(f"store_{num_blocks}", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        kv = ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        kv = ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=1)
        g.output(ops.paged_attention(x, ro, kv, lengths, lookup, layer_idx=0, scale=0.25))
    return g


NUM_BLOCKS = 64


@pytest.fixture(scope="module")
def store_models(tmp_path_factory):  # noqa: ANN201
    graph = _store_graph(NUM_BLOCKS)
    cache_dir = tmp_path_factory.mktemp("iree")
    return {
        inplace: compile_iree(graph, device="cpu", weights={}, cache_dir=cache_dir, inplace=inplace)
        for inplace in (True, False)
    }


def _call(model, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:  # noqa: ANN001
    """One call writing 3 rows of sequence 0 and 1 of sequence 1; (x, output, seconds)."""
    x = torch.randn(4, SMALL.n_kv_heads, SMALL.head_dim, generator=torch.Generator().manual_seed(0))
    ro = torch.tensor([0, 3, 4], dtype=torch.uint32)
    lengths = torch.tensor([5, 2], dtype=torch.uint32)
    lookup = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]], dtype=torch.uint32)
    start = time.perf_counter()
    (y,) = model(x, ro, cache, lengths, lookup)
    return x, y, time.perf_counter() - start


def test_an_inplace_step_writes_only_its_rows_of_the_callers_tensor_and_moves_no_cache(store_models) -> None:
    shape = [NUM_BLOCKS, 2, 1, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]
    eager = fusegraph.compile(
        _store_graph(NUM_BLOCKS), backend="eager", device="cpu", weights={}, pipeline=None
    )
    want_cache = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    _, want, _ = _call(eager, want_cache)
    results = {}
    for inplace, model in store_models.items():
        cache = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        sentinel, pointer = cache.clone(), cache.data_ptr()
        for _ in range(2):  # the second call reuses the module on the same caller tensor
            cache.copy_(sentinel)
            x, y, _ = _call(model, cache)
        torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
        results[inplace] = cache
        assert cache.data_ptr() == pointer
        # Sequence 0 wrote positions 5..7 (block 1, slots 1..3), sequence 1 position 2 (block 4).
        changed = (cache != sentinel).flatten(4).any(-1)
        assert {(b, s) for b, _, _, s in changed.nonzero().tolist()} == {(1, 1), (1, 2), (1, 3), (4, 2)}
        for key_or_value in (0, 1):
            torch.testing.assert_close(cache[1, key_or_value, 0, 1:4], x[:3])
            torch.testing.assert_close(cache[4, key_or_value, 0, 2], x[3])
    assert store_models[True].transfers == {"h2d": 0, "d2h": 0}
    assert store_models[True].zero_copy  # the caller's cache was imported, not uploaded
    assert torch.equal(results[True], results[False]) and torch.equal(results[True], want_cache)


def test_fusegraph_compile_uses_the_inplace_form_by_default(store_models) -> None:
    model = fusegraph.compile(
        _store_graph(NUM_BLOCKS), backend="iree", device="cpu", weights={},
        cache_dir=store_models[True].vmfb_path.parent, pipeline=None,
    )  # fmt: skip
    assert model.inplace and model.cache_hit and model.vmfb_path == store_models[True].vmfb_path


BARRIER_IR = """\
    %5 = hal.tensor.alias wait(%arg2) => %4 : tensor<8x2xf32> to %arg1 : !hal.buffer_view
    %6:2 = hal.tensor.barrier join(%5, %3 : tensor<8x2xf32>, tensor<?x4xf32>) => %arg3 : !hal.fence loc("x":1:2)
    %dim = tensor.dim %6#1, %c0 : tensor<?x4xf32>
    %7 = hal.tensor.export %6#1 : tensor<?x4xf32>{%dim} -> !hal.buffer_view
"""


def test_the_entry_barrier_keeps_the_outputs_and_drops_the_aliased_cache() -> None:
    got = drop_aliases_from_barrier(BARRIER_IR)
    assert got is not None
    assert '%6 = hal.tensor.barrier join(%3 : tensor<?x4xf32>) => %arg3 : !hal.fence loc("x":1:2)' in got
    assert "tensor.dim %6, %c0" in got and "hal.tensor.export %6 :" in got and "#1" not in got
    assert "hal.tensor.alias" in got  # the write into the argument's storage stays
    # A barrier result of the alias that is used elsewhere: left alone.
    assert drop_aliases_from_barrier(BARRIER_IR + "    %8 = foo %6#0\n") is None
    assert drop_aliases_from_barrier(BARRIER_IR.replace("hal.tensor.alias", "hal.tensor.other")) is None


def test_the_barrier_rewrite_applies_only_where_iree_writes_the_callers_storage() -> None:
    assert barrier_rewrite_safe(gptq_attention_graph(1, fused=True))
    assert barrier_rewrite_safe(gptq_attention_graph(1, fused=False))
    assert barrier_rewrite_safe(_store_graph(8))
    # Layer 0's attention reads the version layer 1 overwrites: IREE 3.13 clones the cache.
    assert outputs_follow_writes(gptq_attention_graph(2, fused=True))
    assert not barrier_rewrite_safe(gptq_attention_graph(2, fused=True))
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SMALL.n_kv_heads, SMALL.head_dim], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *kv_input_types(1),
    ]
    with Graph("store_only", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        g.output(ops.add(x, x))  # does not read the cache: the barrier must cover the write
    assert not outputs_follow_writes(g) and not barrier_rewrite_safe(g)
