"""IREE CUDA target flags and the custom dispatches (`iree_dispatch*`): the flags name the CUDA
target; the module keeps the fused ops as our Triton kernels (FileCheck); each PTX entry's
parameters are exactly the bindings and constants its export declares; the module compiles
for CUDA here, with no whole-cache copy. The kernels' numerics run on a GPU
(`benchmarks/gpu_iree.py`, docs/iree_dispatch.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusegraph.compiler.graph import Graph
from fusegraph.runtime.iree_compile import iree_cuda_arch, target_flags

ireec = pytest.importorskip("iree.compiler")
pytest.importorskip("triton")

FILECHECK = Path(sys.executable).with_name("filecheck")

_ADD = """
func.func @f(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %0 = arith.addf %a, %b : tensor<4xf32>
  return %0 : tensor<4xf32>
}
"""


def _text(out: object) -> str:
    return out.decode() if isinstance(out, bytes) else str(out)


def test_cuda_flags_name_the_cuda_target_not_rocm() -> None:
    flags = target_flags("cuda:1")
    assert flags == ["--iree-hal-target-device=cuda", "--iree-cuda-target=sm_89"]
    assert not any("rocm" in f for f in flags)
    assert iree_cuda_arch("sm_80") == "sm_80" and iree_cuda_arch("sm_90a") == "sm_89"
    assert iree_cuda_arch("sm_121") == "sm_121" and iree_cuda_arch("sm_100") == "sm_89"
    for bad in ("sm_50", "90", "gfx942"):
        with pytest.raises(ValueError, match="cuda_arch must be 'sm_<NN>'"):
            iree_cuda_arch(bad)


def test_cuda_flags_reach_the_executable_target() -> None:
    out = ireec.compile_str(
        _ADD, target_backends=[], extra_args=[*target_flags("cuda"), "--compile-to=executable-targets"]
    )
    archs = set(re.findall(r'#iree_gpu\.target<arch = "(sm_\d+)"', _text(out)))
    assert archs == {"sm_89"}  # with the ROCm flag it was IREE's default, sm_60


@pytest.fixture(scope="module")
def dispatch_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(the custom-mode torch module of one fused GPTQ attention layer, it with dispatches)."""
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
    from fusegraph.runtime.iree_dispatch import add_dispatches
    from tests.lowering._graphs import gptq_attention_graph

    graph = gptq_attention_graph(num_layers=1, fused=True)
    text = to_torch_mlir(graph, mode="custom", inplace_buffers=True, outputs_as_args=True).text
    return text, add_dispatches(text, tmp_path_factory.mktemp("ptx"))


CHECKS = """
CHECK-LABEL: func.func @main(
CHECK-NEXT:    func.call @fg_qmatmul_gptq_0_entry_guard(%arg0)
CHECK-NEXT:    func.call @fg_paged_attention_2_entry_guard(%arg1)
CHECK-NOT:     torch.operator
CHECK:         call @fg_qmatmul_gptq_0(%arg0,
CHECK:         %[[RSS:.+]]:2 = func.call @fg_rope_split_store_1(
CHECK:         torch.overwrite.tensor.contents %[[RSS]]#1 overwrites %arg2
CHECK:         call @fg_paged_attention_2({{.*}}, %[[RSS]]#1,
CHECK:         call @fg_qmatmul_gptq_3(
CHECK-NOT:     torch.operator
CHECK-LABEL: func.func private @fg_qmatmul_gptq_0(
CHECK:         flow.dispatch @fg_qmatmul_gptq_0_k0::@_gptq_matmul_kernel[%[[M:.+]]](
CHECK:         flow.dispatch @fg_qmatmul_gptq_0_k1::@_splitk_reduce_kernel
CHECK:       "hal.executable.source"() <{sym_name = "fg_qmatmul_gptq_0_k0"{{.*}}objects = #hal.executable.objects<{#hal.executable.target<"cuda", "cuda-nvptx-fb"> = [#hal.executable.object<{path = "{{.*}}/_gptq_matmul_kernel-{{[0-9a-f]+}}.ptx"}>]}>}>
CHECK-LABEL: func.func private @fg_rope_split_store_1(
CHECK:         %[[KV:.+]] = torch_c.to_builtin_tensor %a3 : !torch.vtensor<[24,2,1,4,2,16],f32> -> tensor<24x2x1x4x2x16xf32>
CHECK:         flow.dispatch @fg_rope_split_store_1_k0::@_rope_split_store_kernel[{{.*}}]({{.*}}) : (i32, i32, i32, {{.*}}) -> (tensor<?x64xf32>{{.*}}, %[[KV]])
CHECK:       "hal.executable.export"() <{sym_name = "_rope_split_store_kernel"{{.*}}layout = #hal.pipeline.layout<constants = 3, bindings = [#hal.pipeline.binding<storage_buffer, ReadOnly>, #hal.pipeline.binding<storage_buffer, ReadOnly>, #hal.pipeline.binding<storage_buffer, ReadOnly>, #hal.pipeline.binding<storage_buffer>, #hal.pipeline.binding<storage_buffer, ReadOnly>, #hal.pipeline.binding<storage_buffer, ReadOnly>, #hal.pipeline.binding<storage_buffer>]>
CHECK-LABEL: func.func private @fg_paged_attention_2_entry_guard(%a1: !torch.vtensor<[?],ui32>)
CHECK:         %[[B:.+]] = arith.constant 257 : index
CHECK:         %[[OK:.+]] = arith.cmpi ule, %{{.+}}, %[[B]] : index
CHECK:         cf.assert %[[OK]], "iree_dispatch: fg.attention.paged: batch above max_batch 256"
CHECK-LABEL: func.func private @fg_paged_attention_2_guard(
CHECK:         cf.assert %{{.+}}, "iree_dispatch: fg.attention.paged: a call with 0 rows has no launch"
CHECK-LABEL: func.func private @fg_paged_attention_2(
CHECK:         flow.dispatch @fg_paged_attention_2_k0::@_paged_attention_kernel[%{{.+}}, %{{.+}}]
"""


def test_fused_ops_become_custom_dispatches(dispatch_module: tuple[str, str], tmp_path: Path) -> None:
    before, after = dispatch_module
    assert before.count('torch.operator "torch.fusegraph.') == 4
    checks = tmp_path / "checks.txt"
    checks.write_text(CHECKS)
    result = subprocess.run(
        [str(FILECHECK), str(checks)], input=after, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_ptx_entries_match_the_declared_layouts(dispatch_module: tuple[str, str]) -> None:
    from fusegraph.runtime.iree_dispatch_ptx import PTX_VERSION, entry_params

    _, text = dispatch_module
    sources = re.findall(
        r'path = "([^"]+)".*?\n\s*"hal.executable.export"\(\) <\{sym_name = "(\w+)".*?constants = (\d+), '
        r"bindings = \[(.*?)\]>, workgroup_size = \[(\d+) : index.*?\}>",
        text,
    )
    assert len(sources) == 6  # 2 GPTQ matmuls (matmul + split-K reduce each), rope_split_store, attention
    for path, export, constants, bindings, threads in sources:
        ptx = Path(path).read_text()
        name, params = entry_params(ptx)
        kinds = [t for t, _ in params]
        n_bindings = bindings.count("#hal.pipeline.binding")
        assert name == export
        assert kinds == ["u64"] * n_bindings + ["u32"] * int(constants), (export, kinds, bindings)
        assert f".reqntid {threads}" in ptx
        assert f".version {PTX_VERSION // 10}.{PTX_VERSION % 10}" in ptx
        assert "scratch" not in ptx.split("{", 1)[0]  # Triton's scratch pointers are gone


def test_a_kernel_with_scalars_before_pointers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton.jit reads it: compile, do not interpret
    import triton
    import triton.language as tl

    from fusegraph.runtime.iree_dispatch_ptx import triton_ptx

    @triton.jit
    def scale(n, x_ptr, BLOCK: tl.constexpr):  # noqa: N803
        offs = tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

    with pytest.raises(ValueError, match="not pointers then scalars"):
        triton_ptx(scale, {"n": "i32", "x_ptr": "*fp32"}, {"BLOCK": 64})
    kernel = triton_ptx(scale, {"x_ptr": "*fp32"}, {"n": 10, "BLOCK": 64})
    assert kernel.params == (("x_ptr", "*fp32"),) and kernel.threads == 128


def test_unsupported_op_is_refused_by_name() -> None:
    from fusegraph.runtime.iree_dispatch import DispatchUnsupportedError, add_dispatches

    text = (
        "module {\n  func.func @main(%arg0: !torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32> {\n"
        '    %0 = torch.operator "torch.fusegraph.all_reduce"(%arg0) : (!torch.vtensor<[4],f32>) -> '
        "!torch.vtensor<[4],f32>\n    return %0 : !torch.vtensor<[4],f32>\n  }\n}\n"
    )
    with pytest.raises(DispatchUnsupportedError, match="no custom dispatch for fg op 'all_reduce'"):
        add_dispatches(text, "/nonexistent-unused")


def test_an_attention_with_an_output_perm_is_refused_so_it_compiles_decomposed(tmp_path: Path) -> None:
    """`fg.attention.paged ... perm` (the act-order fold's form) lowers with the perm as the custom op's last operand;
    the attention dispatch has no perm, so it refuses by name (`iree_compile` then compiles the graph decomposed)."""
    from fusegraph import DeviceRef, DType, TensorType
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
    from fusegraph.runtime.iree_dispatch import DispatchUnsupportedError, add_dispatches
    from tests.ops.test_attention_perm import D, H, _build

    graph = _build(TensorType(DType.int32, [H * D], DeviceRef.CPU()))
    text = to_torch_mlir(graph, mode="custom", inplace_buffers=True, outputs_as_args=True).text
    (call,) = [line for line in text.splitlines() if "torch.fusegraph.paged_attention" in line]
    assert "%none, %arg5) :" in call and "!torch.vtensor<[32],si32>) ->" in call
    with pytest.raises(DispatchUnsupportedError, match="paged_attention: no dispatch for an output perm"):
        add_dispatches(text, tmp_path)


def test_dispatch_module_compiles_for_cuda_with_no_cache_copy(dispatch_module: tuple[str, str]) -> None:
    from fusegraph.runtime.iree_inplace import stage_inplace

    _, text = dispatch_module
    staged, consumed = stage_inplace(text, target_flags("cuda"))
    assert consumed == ["%arg2"]
    stream = _text(
        ireec.compile_str(
            staged,
            target_backends=[],
            extra_args=[*target_flags("cuda"), "--compile-from=input", "--compile-to=stream"],
        )
    )
    dispatched = re.findall(r"stream\.cmd\.dispatch @(fg_\w+)::@(\w+)", stream)
    assert [k for _, k in dispatched] == [
        "_gptq_matmul_kernel", "_splitk_reduce_kernel", "_rope_split_store_kernel", "_paged_attention_kernel",
        "_gptq_matmul_kernel", "_splitk_reduce_kernel",
    ]  # fmt: skip
    assert "stream.cmd.copy" not in stream  # the cache is written where it lies
    vmfb = ireec.compile_str(
        staged, target_backends=[], extra_args=[*target_flags("cuda"), "--compile-from=input"]
    )
    assert len(vmfb) > 10_000


def test_two_layer_dispatch_module_writes_the_cache_in_place(tmp_path: Path) -> None:
    """Two layers on one cache: layer 1's store writes the version layer 0's attention read; with
    the consumed entry IREE still copies nothing (the dispatches tie the cache)."""
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
    from fusegraph.runtime.iree_dispatch import add_dispatches
    from fusegraph.runtime.iree_inplace import consume_safe, stage_inplace
    from tests.lowering._graphs import gptq_attention_graph

    graph = gptq_attention_graph(num_layers=2, fused=True)
    assert consume_safe(graph)
    text = add_dispatches(
        to_torch_mlir(graph, mode="custom", inplace_buffers=True, outputs_as_args=True).text, tmp_path
    )
    staged, consumed = stage_inplace(text, target_flags("cuda"))
    assert consumed == ["%arg2"]
    stream = _text(
        ireec.compile_str(
            staged,
            target_backends=[],
            extra_args=[*target_flags("cuda"), "--compile-from=input", "--compile-to=stream"],
        )
    )
    kernels = re.findall(r"stream\.cmd\.dispatch @fg_\w+::@(\w+)", stream)
    assert kernels.count("_rope_split_store_kernel") == 2 and kernels.count("_paged_attention_kernel") == 2
    assert "stream.cmd.copy" not in stream and "stream.async.clone" not in stream


def test_compile_graph_on_cuda_compiles_the_dispatch_module_for_the_device_arch(tmp_path: Path) -> None:
    """What `IreeCompiledGraph` runs on CUDA: custom lowering, PTX for `cuda_arch` (an A100 here:
    sm_80, IREE target sm_80), the entry consuming the cache; the CPU keeps the decomposed form."""
    from fusegraph.runtime.iree_compile import compile_graph
    from tests.lowering._graphs import gptq_attention_graph

    graph = gptq_attention_graph(num_layers=1, fused=True)
    mlir, vmfb, hit = compile_graph(
        graph, target_flags("cuda", cuda_arch="sm_80"), tmp_path, cuda_arch="sm_80"
    )
    assert mlir.mode == "custom" and vmfb.exists() and not hit
    targets = set()
    for ptx in (tmp_path / "ptx").glob("*.ptx"):
        target = re.search(r"\.target (\w+)", ptx.read_text())
        assert target is not None, ptx
        targets.add(target.group(1))
    assert targets == {"sm_80"}


def _fused_qkv_layer() -> Graph:
    """A small fp16 `GPTQAttentionWithRope` through the IREE pipeline: `fuse-qkv-projections`
    concatenates the q, k and v weights, so its qkv matmul reads three `torch.aten.cat`s."""
    from fusegraph import DeviceRef, DType, Graph, TensorType
    from fusegraph.compiler.types import BufferType
    from fusegraph.nn import (
        GPTQAttentionWithRope,
        KVCacheParams,
        PagedCacheValues,
        QuantizationConfig,
        RotaryEmbedding,
    )
    from fusegraph.runtime.pipeline import run_pipeline

    gpu = DeviceRef.GPU()
    kv_params = KVCacheParams(
        dtype=DType.float16, n_kv_heads=2, head_dim=32, num_layers=1, page_size=16, devices=[gpu]
    )
    rope = RotaryEmbedding(dim=128, n_heads=4, theta=1e4, max_seq_len=64, interleaved=False, device=gpu)
    attn = GPTQAttentionWithRope(
        quantization_config=QuantizationConfig(bits=4, group_size=64, desc_act=False, sym=False), rope=rope,
        num_attention_heads=4, num_key_value_heads=2, hidden_size=128, kv_params=kv_params, dtype=DType.float16,
        devices=[gpu],
    )  # fmt: skip
    u32 = DType.uint32
    inputs: list[TensorType | BufferType] = [
        TensorType(DType.float16, ["total_seq_len", 128], gpu),
        TensorType(u32, ["batch_plus_1"], gpu),
        BufferType(DType.float16, kv_params.blocks_shape(8), gpu),
        TensorType(u32, ["batch"], gpu),
        TensorType(u32, ["batch", "max_pages"], gpu),
    ]
    with Graph("qkv_fused", input_types=inputs) as g:
        x, ro, *kv = g.inputs
        g.output(attn(0, x, PagedCacheValues(*kv), rope.freqs_cis, ro))
    return run_pipeline(g, "default", "iree", "cuda")[0]


def test_concatenated_qkv_weights_become_one_matmul_per_piece(tmp_path: Path) -> None:
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
    from fusegraph.runtime.iree_dispatch import add_dispatches
    from fusegraph.runtime.iree_inplace import stage_inplace

    text = to_torch_mlir(_fused_qkv_layer(), mode="custom", inplace_buffers=True, outputs_as_args=True).text
    assert text.count("torch.aten.cat") == 3  # qweight, scales, qzeros of q, k and v
    out = add_dispatches(text, tmp_path)
    call = re.search(r"func\.call @fg_qmatmul_gptq_pieces_0\((.*?)\) :", out)
    assert call is not None and len(call.group(1).split(",")) == 10  # x, then (qweight, scales, qzeros) x 3
    staged, _ = stage_inplace(out, target_flags("cuda"))
    stream = _text(
        ireec.compile_str(
            staged,
            target_backends=[],
            extra_args=[*target_flags("cuda"), "--compile-from=input", "--compile-to=stream"],
        )
    )
    kernels = re.findall(r"stream\.cmd\.dispatch @[\w$]+::@([\w$]+)", stream)
    assert kernels.count("_reduce_into_columns_kernel") == 3 and kernels.count("_gptq_matmul_kernel") == 4
    assert all(k.startswith("_") for k in kernels), kernels  # no IREE-generated copy of the weights
    assert "stream.cmd.copy" not in stream


def test_reduce_into_columns_writes_the_sum_into_its_columns_only() -> None:
    import torch

    from tests.kernels._interp import load_interpreted

    kernels = load_interpreted("iree_dispatch_reduce")
    gen = torch.Generator().manual_seed(0)
    ws = torch.randn(3, 5, 24, generator=gen)  # 3 K slices, M = 5, a 24-column piece
    out = torch.full((5, 64), -7.0, dtype=torch.float16)
    kernels._reduce_into_columns_kernel[(4,)](ws, out, 5, N_PIECE=24, N_OUT=64, COL0=16, SPLIT_K=3, BLOCK=32)
    want = (ws[0] + ws[1] + ws[2]).to(torch.float16)  # the kernel's order, in fp32
    assert torch.equal(out[:, 16:40], want)
    assert bool((out[:, :16] == -7.0).all() and (out[:, 40:] == -7.0).all())
