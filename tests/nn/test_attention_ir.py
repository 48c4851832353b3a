"""FileCheck on the printed IR of a 2-layer stack: `_fuse_rope_and_store=True` emits exactly one
`fg.rope_split_store` per layer and no split/rope/store; False emits the canonical unfused form
(split, two ropes, two stores on chained buffer versions) and no fused op."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    AttentionWithRope,
    GPTQAttentionWithRope,
    KVCacheParams,
    LayerList,
    Module,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
)

CPU = DeviceRef.CPU()
FILECHECK = Path(sys.executable).with_name("filecheck")
NO_UNFUSED = ["CHECK-NOT: fg.split", "CHECK-NOT: fg.rope %", "CHECK-NOT: fg.kv_cache.store"]


class Block(Module):
    def __init__(self, attn):
        super().__init__()
        self.self_attn = attn


class Model(Module):
    def __init__(self, blocks):
        super().__init__()
        self.layers = LayerList(blocks)


def _graph(fuse: bool, gptq: bool, qk_norm: bool) -> str:
    kv = KVCacheParams(DType.float32, 2, 16, num_layers=2, page_size=4, devices=[CPU])
    rope = RotaryEmbedding(64, 4, 1e4, 32, interleaved=False)
    kw: dict[str, Any] = dict(
        rope=rope,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        kv_params=kv,
        use_qk_norm=qk_norm,
        _fuse_rope_and_store=fuse,
    )
    layers: list[AttentionWithRope]
    if gptq:
        layers = [
            GPTQAttentionWithRope(quantization_config=QuantizationConfig(bits=4, group_size=32), **kw)
            for _ in range(2)
        ]
    else:
        layers = [AttentionWithRope(**kw) for _ in range(2)]
    stack = Model([Block(a) for a in layers]).layers
    types = [
        TensorType(DType.float32, ["total_seq_len", 64], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        kv_buffer_type(kv),
        TensorType(DType.uint32, ["batch"], CPU),
        TensorType(DType.uint32, ["batch", "max_pages"], CPU),
    ]
    with Graph("attn", input_types=types) as g:
        x, row_offsets, *kv_inputs = g.inputs
        cache = PagedCacheValues(*kv_inputs)
        for i, block in enumerate(stack):
            x = block.self_attn(i, x, cache, rope.freqs_cis, row_offsets)
        g.output(x)
    g.verify()
    return str(g)


def kv_buffer_type(kv):
    return BufferType(kv.dtype, kv.blocks_shape(8), CPU)


def _fused_checks(layer: int, qk_norm: bool) -> list[str]:
    # (no CHECK-NOT of the fused op right before its own match: filecheck 1.0.6 scans the NOT
    # range up to the end of the matched line; the op count is checked separately)
    lines = list(NO_UNFUSED)
    if qk_norm:  # the norm precedes the fused op: split -> rms_norm(q), rms_norm(k) -> concat
        lines = NO_UNFUSED[1:] + [
            "CHECK: fg.split",
            "CHECK: fg.rms_norm",
            "CHECK: fg.rms_norm",
            "CHECK: fg.concat",
        ]
        lines += NO_UNFUSED
    lines += [
        f"CHECK: %{{{{[0-9]+}}}}, %[[KV{layer}:[0-9]+]] = fg.rope_split_store {{{{.*}}}} "
        f"{{layer_idx = {layer} : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false}}",
        *NO_UNFUSED,
        "CHECK-NOT: fg.rope_split_store",
        f"CHECK: fg.attention.paged %{{{{[0-9]+}}}}, %{{{{[0-9]+}}}}, %[[KV{layer}]], {{{{.*}}}}layer_idx = {layer} : i64",
    ]
    return lines


def _unfused_checks(layer: int, qk_norm: bool) -> list[str]:
    n = f"L{layer}"
    q3, k3 = (f"Q3N{n}", f"K3N{n}") if qk_norm else (f"Q3{n}", f"K3{n}")
    lines = [
        "CHECK-NOT: fg.rope_split_store",
        f"CHECK: %[[Q{n}:[0-9]+]], %[[K{n}:[0-9]+]], %[[V{n}:[0-9]+]] = fg.split %{{{{[0-9]+}}}} {{axis = 1 : i64}}",
        f"CHECK: %[[Q3{n}:[0-9]+]] = fg.reshape %[[Q{n}]]",
        f"CHECK: %[[K3{n}:[0-9]+]] = fg.reshape %[[K{n}]]",
        f"CHECK: %[[V3{n}:[0-9]+]] = fg.reshape %[[V{n}]]",
    ]
    if qk_norm:
        lines += [
            f"CHECK: %[[{q3}:[0-9]+]] = fg.rms_norm %[[Q3{n}]]",
            f"CHECK: %[[{k3}:[0-9]+]] = fg.rms_norm %[[K3{n}]]",
        ]
    lines += [
        f"CHECK: %[[QR{n}:[0-9]+]] = fg.rope %[[{q3}]], %[[RO{n}:[0-9]+]], %[[LEN{n}:[0-9]+]], %{{{{[0-9]+}}}} {{interleaved = false}}",
        f"CHECK: %[[KR{n}:[0-9]+]] = fg.rope %[[{k3}]], %[[RO{n}]], %[[LEN{n}]], %{{{{[0-9]+}}}} {{interleaved = false}}",
        f"CHECK: %[[B1{n}:[0-9]+]] = fg.kv_cache.store %{{{{[0-9]+}}}}, %[[KR{n}]], %[[RO{n}]], %[[LEN{n}]], "
        f"%{{{{[0-9]+}}}} {{layer_idx = {layer} : i64, key_or_value = 0 : i64}}",
        f"CHECK: %[[B2{n}:[0-9]+]] = fg.kv_cache.store %[[B1{n}]], %[[V3{n}]], %[[RO{n}]], %[[LEN{n}]], "
        f"%{{{{[0-9]+}}}} {{layer_idx = {layer} : i64, key_or_value = 1 : i64}}",
        "CHECK-NOT: fg.rope_split_store",
        "CHECK-NOT: fg.rope %",
        "CHECK-NOT: fg.kv_cache.store",
        f"CHECK: fg.attention.paged %{{{{[0-9]+}}}}, %[[RO{n}]], %[[B2{n}]], {{{{.*}}}}layer_idx = {layer} : i64",
    ]
    return lines


def _filecheck(ir: str, checks: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    check_file = tmp_path / "checks.mlir"
    check_file.write_text("\n".join(f"// {line}" for line in checks) + "\n")
    return subprocess.run([str(FILECHECK), str(check_file)], input=ir, capture_output=True, text=True)


@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qk_norm"])
@pytest.mark.parametrize("gptq", [False, True], ids=["dense", "gptq"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_ir__fuse_flag_gives_one_fused_op_per_layer_or_the_canonical_unfused_form(
    fuse, gptq, qk_norm, tmp_path
):
    ir = _graph(fuse, gptq, qk_norm)
    per_layer = _fused_checks if fuse else _unfused_checks
    proj = "qweight" if gptq else "weight"
    checks = [f'CHECK: fg.weight "layers.0.self_attn.q_proj.{proj}"']
    checks += per_layer(0, qk_norm)
    checks += per_layer(1, qk_norm)
    checks += [f'CHECK: fg.weight "layers.1.self_attn.o_proj.{proj}"']
    checks += ["CHECK-NOT: fg.rope_split_store", "CHECK-NOT: fg.kv_cache.store", "CHECK: func.return"]
    result = _filecheck(ir, checks, tmp_path)
    assert result.returncode == 0, result.stderr + "\n" + ir
    counts = (
        ["CHECK-COUNT-2: fg.rope_split_store", "CHECK-NOT: fg.rope_split_store"]
        if fuse
        else ["CHECK-COUNT-4: fg.rope %", "CHECK-NOT: fg.rope %"]
    )
    result = _filecheck(ir, counts, tmp_path)
    assert result.returncode == 0, result.stderr


def test_ir__filecheck_catches_a_wrong_form(tmp_path):
    """The checks are not vacuous: the unfused IR fails the fused checks and vice versa."""
    assert _filecheck(_graph(False, False, False), _fused_checks(0, False), tmp_path).returncode != 0
    assert _filecheck(_graph(True, False, False), _unfused_checks(0, False), tmp_path).returncode != 0
