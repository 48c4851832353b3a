"""The IREE path updates the KV cache in place: the emitted torch-mlir overwrites the mutable
cache argument and does not return it (FileCheck); a 2-layer module, whose entry consumes the
cache, has no whole-cache copy in IREE's stream IR (a borrowed import has one); at run time a
ragged prefill and a decode write only their rows of the caller's tensor, byte-identical to
eager in every layer (no copy back, no transfers: counted, never timed); and when the entry
may consume the cache (`consume_safe`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
from fusegraph.runtime.iree_backend import compile_iree
from fusegraph.runtime.iree_compile import target_flags
from fusegraph.runtime.iree_inplace import consume_safe, mark_consumed, stage_inplace
from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager
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


def _store_graph(num_blocks: int, num_layers: int = 2, chained: bool = True) -> Graph:
    """Each layer stores K = V = its input h into the cache, then attends with q = h; it outputs
    every layer's attention. Layer l+1's input is `x + (a - a)` for layer l's attention a:
    exactly x (a is finite), so the cache is exact and comparable byte for byte, yet computed
    from a, so layer l+1's store depends on layer l's attention as in a real stack. With
    `chained=False` every layer stores x itself: nothing orders layer 0's attention before
    layer 1's store."""
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SMALL.n_kv_heads, SMALL.head_dim], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *kv_input_types(num_layers, AttnShape(num_blocks=num_blocks)),
    ]
    with Graph(f"store_{num_layers}l_{num_blocks}", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        h, outputs = x, []
        for layer in range(num_layers):
            for key_or_value in (0, 1):
                kv = ops.kv_cache_store(
                    kv, h, ro, lengths, lookup, layer_idx=layer, key_or_value=key_or_value
                )
            outputs.append(ops.paged_attention(h, ro, kv, lengths, lookup, layer_idx=layer, scale=0.25))
            h = ops.add(x, ops.sub(outputs[-1], outputs[-1])) if chained else x
        g.output(*outputs)
    return g


NUM_BLOCKS, LAYERS = 64, 2
STEPS = ([5, 7, 1], [1, 1, 1])  # a ragged prefill, then a decode step


@pytest.fixture(scope="module")
def store_models(tmp_path_factory):  # noqa: ANN201
    graph = _store_graph(NUM_BLOCKS)
    cache_dir = tmp_path_factory.mktemp("iree")
    return {
        inplace: compile_iree(graph, device="cpu", weights={}, cache_dir=cache_dir, inplace=inplace)
        for inplace in (True, False)
    }


def _sentinel() -> torch.Tensor:
    shape = [NUM_BLOCKS, 2, LAYERS, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _run(model) -> tuple[list[torch.Tensor], PagedKVCacheManager, set[tuple[int, int]]]:  # noqa: ANN001
    """STEPS through `model` on a sentinel-filled cache: the outputs, the manager, and the
    (block, slot) pairs the sequences own afterwards."""
    params = SimpleNamespace(
        dtype=DType.float32, n_kv_heads=SMALL.n_kv_heads, head_dim=SMALL.head_dim,
        num_layers=LAYERS, page_size=SMALL.page_size,
    )  # fmt: skip
    manager = PagedKVCacheManager(params, num_blocks=NUM_BLOCKS)
    manager.kv_blocks.copy_(_sentinel())
    pointer, gen = manager.kv_blocks.data_ptr(), torch.Generator().manual_seed(0)
    seqs = [manager.claim(max_len=16) for _ in STEPS[0]]
    outputs: list[torch.Tensor] = []
    for tokens in STEPS:
        batch = manager.prepare(seqs, tokens)
        x = torch.randn(sum(tokens), SMALL.n_kv_heads, SMALL.head_dim, generator=gen)
        outputs.extend(model(x, batch.row_offsets, *batch.kv_inputs))
        manager.commit(seqs, tokens)
    assert manager.kv_blocks.data_ptr() == pointer
    page = SMALL.page_size
    owned = {(manager.pages(s)[p // page], p % page) for s in seqs for p in range(manager.length(s))}
    return outputs, manager, owned


def test_a_2_layer_step_writes_only_its_rows_of_the_callers_cache_byte_identical_to_eager(
    store_models,
) -> None:
    eager = fusegraph.compile(
        _store_graph(NUM_BLOCKS), backend="eager", device="cpu", weights={}, pipeline=None
    )
    want, want_cache, owned = _run(eager)
    assert len(owned) == sum(map(sum, STEPS))
    for inplace, model in store_models.items():
        got, cache, _ = _run(model)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        assert torch.equal(cache.kv_blocks.view(torch.int32), want_cache.kv_blocks.view(torch.int32))
        # Every (block, slot) the sequences do not own keeps its sentinel, in both layers, K and V.
        changed = (cache.kv_blocks != _sentinel()).flatten(4).any(-1)  # [blocks, 2, layers, slots]
        assert {(b, s) for b, _, _, s in changed.nonzero().tolist()} == owned, f"{inplace=}"
        assert changed.sum() == len(owned) * 2 * LAYERS
    assert store_models[True].transfers == {"h2d": 0, "d2h": 0}
    # Every input was imported, not uploaded: the cache, and the manager's metadata (64-byte aligned).
    assert store_models[True].copied_inputs == []


CACHE_BYTES = NUM_BLOCKS * 2 * LAYERS * SMALL.page_size * SMALL.n_kv_heads * SMALL.head_dim * 4


def _cache_copies(text: str, *args: str) -> list[str]:
    """The commands copying or cloning CACHE_BYTES (the static cache size) in IREE's stream IR
    of `text` (compiled with `args`)."""
    import iree.compiler as ireec

    flags = [*target_flags("cpu"), *args, "--compile-to=stream"]
    stream = ireec.compile_str(text, target_backends=[], extra_args=flags).decode()
    copies = re.findall(r"stream\.(?:cmd\.copy|cmd\.clone|async\.clone|async\.copy) .*", stream)
    return [c for c in copies if f"%c{CACHE_BYTES}" in c]


def test_the_consumed_2_layer_module_has_no_whole_cache_copy_and_a_borrowed_one_has(store_models) -> None:
    text = store_models[True].mlir.text
    staged, consumed = stage_inplace(text, target_flags("cpu"))
    assert consumed == ["%arg2"]  # the cache (the outputs are aliased, never imported)
    assert re.search(r"hal\.tensor\.import wait\(%\w+\) => consume %arg2 ", staged)
    assert _cache_copies(staged, "--compile-from=input") == []
    # The same module with the import borrowed (IREE's default): the cache is copied.
    assert _cache_copies(text, "--iree-input-type=torch")


def test_a_graph_that_is_not_consume_safe_is_compiled_borrowed_and_stays_exact(tmp_path) -> None:
    graph = _store_graph(NUM_BLOCKS, chained=False)  # layer 1's store is not ordered after layer 0's reads
    assert not consume_safe(graph)  # so compile_graph keeps IREE's borrowed import (and its copies)
    model = compile_iree(graph, device="cpu", weights={}, cache_dir=tmp_path)
    eager = fusegraph.compile(graph, backend="eager", device="cpu", weights={}, pipeline=None)
    (got, cache, owned), (want, want_cache, _) = _run(model), _run(eager)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache.kv_blocks.view(torch.int32), want_cache.kv_blocks.view(torch.int32))
    changed = (cache.kv_blocks != _sentinel()).flatten(4).any(-1)
    assert {(b, s) for b, _, _, s in changed.nonzero().tolist()} == owned


def test_fusegraph_compile_uses_the_inplace_form_by_default(store_models) -> None:
    model = fusegraph.compile(
        _store_graph(NUM_BLOCKS), backend="iree", device="cpu", weights={},
        cache_dir=store_models[True].vmfb_path.parent, pipeline=None,
    )  # fmt: skip
    assert model.inplace and model.cache_hit and model.vmfb_path == store_models[True].vmfb_path


INPUT_IR = """\
    %8 = hal.tensor.import wait(%arg6) => %arg4 : !hal.buffer_view -> tensor<?x?xi32>{%6, %7}
    %9 = hal.tensor.import wait(%arg6) => %arg2 : !hal.buffer_view -> tensor<8x2x1x4x2x16xf32>
    %118 = hal.tensor.alias wait(%arg6) => %4 : tensor<8x2x1x4x2x16xf32> to %arg2 : !hal.buffer_view
    %119 = hal.tensor.alias wait(%arg6) => %5 : tensor<?x2x16xf32>{%d} to %arg5 : !hal.buffer_view
"""


def test_only_the_imports_of_arguments_written_in_place_are_consumed() -> None:
    text, consumed = mark_consumed(INPUT_IR)
    assert consumed == ["%arg2"]
    assert "hal.tensor.import wait(%arg6) => consume %arg2 : !hal.buffer_view" in text
    assert "hal.tensor.import wait(%arg6) => %arg4 :" in text  # read only: still borrowed
    assert mark_consumed(text) == (text, [])  # already consumed
    functional = INPUT_IR.replace("hal.tensor.alias", "hal.tensor.other")
    assert mark_consumed(functional) == (functional, [])


def test_the_entry_consumes_the_cache_only_where_reads_precede_the_next_write() -> None:
    for layers, fused in ((1, True), (1, False), (2, True), (2, False)):
        assert consume_safe(gptq_attention_graph(layers, fused=fused)), (layers, fused)
    assert consume_safe(_store_graph(8))
    # Layer 1's store does not depend on layer 0's attention: nothing orders them.
    assert not consume_safe(_store_graph(8, chained=False))
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SMALL.n_kv_heads, SMALL.head_dim], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *kv_input_types(1),
    ]
    with Graph("store_only", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        g.output(ops.add(x, x))  # nothing reads the cache: the write is all there is
    assert consume_safe(g)
    with Graph("fork", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        ops.kv_cache_store(kv, x, ro, lengths, lookup, layer_idx=0, key_or_value=1)  # the same version
        g.output(ops.add(x, x))
    assert not consume_safe(g)
    with Graph("no_write", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        g.output(ops.paged_attention(x, ro, kv, lengths, lookup, layer_idx=0, scale=0.25))
    assert not consume_safe(g)
