"""One small graph per registered op, for the round-trip test.

Every op family adds an entry: `EXAMPLES["fg.<op>"] = builder`, where the builder
returns a Graph that contains the op. `test_every_registered_op_round_trips` fails for
an op without an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.ops.custom import ParamValue

CPU = DeviceRef.CPU()
F32 = DType.float32

EXAMPLES: dict[str, Callable[[], Graph]] = {}


def example(*names: str) -> Callable[[Callable[[], Graph]], Callable[[], Graph]]:
    """Register a builder as the example for the named ops."""

    def register(fn: Callable[[], Graph]) -> Callable[[], Graph]:
        for name in names:
            EXAMPLES[name] = fn
        return fn

    return register


def _tensor(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


@example("fg.weight", "fg.matmul", "fg.permute", "fg.relu")
def _mlp() -> Graph:
    with Graph("mlp", input_types=[_tensor("batch", 64)]) as g:
        (x,) = g.inputs
        w = g.add_weight("layers.0.w", _tensor(32, 64))
        g.output(ops.relu(x @ w.T))
    return g


@example(
    "fg.add",
    "fg.sub",
    "fg.mul",
    "fg.div",
    "fg.constant",
    "fg.neg",
    "fg.exp",
    "fg.rsqrt",
    "fg.silu",
    "fg.cast",
    "fg.clamp",
)
def _elementwise() -> Graph:
    with Graph("elementwise", input_types=[_tensor("n", 8), _tensor(8)]) as g:
        x, y = g.inputs
        z = ops.silu((x + y) * 2.0 - ops.exp(-x) / ops.rsqrt(x))
        g.output(ops.clamp(ops.cast(z, DType.bfloat16), min=-1.0, max=1.0))
    return g


@example("fg.reshape", "fg.split", "fg.concat")
def _shapes() -> Graph:
    with Graph("shapes", input_types=[_tensor("total_seq_len", 96)]) as g:
        (x,) = g.inputs
        q, k, v = ops.split(x, [64, 16, 16], axis=1)
        heads = ops.concat([q, k, v], axis=1).reshape(["total_seq_len", 6, -1])
        g.output(heads, ops.transpose(heads, 0, 1))
    return g


def _paged_inputs() -> list[TensorType | BufferType]:
    """qkv, row offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table (4 q heads, 2 kv)."""
    u32 = DType.uint32
    return [
        _tensor("total_seq_len", 64),
        _tensor("batch_plus_1", dtype=u32),
        _tensor(256, 8),
        BufferType(F32, [16, 2, 2, 4, 2, 8], CPU),
        _tensor("batch", dtype=u32),
        _tensor("batch", "max_pages", dtype=u32),
    ]


@example("fg.rope", "fg.kv_cache.store", "fg.attention.paged")
def _paged_unfused() -> Graph:
    with Graph("paged_unfused", input_types=_paged_inputs()) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, k, v = (t.reshape(["total_seq_len", -1, 8]) for t in ops.split(qkv, [32, 16, 16], axis=1))
        q = ops.rope(q, ro, lens, freqs, interleaved=False)
        k = ops.rope(k, ro, lens, freqs, interleaved=True)
        kv = ops.kv_cache_store(kv, k, ro, lens, lookup, layer_idx=1, key_or_value=0)
        kv = ops.kv_cache_store(kv, v, ro, lens, lookup, layer_idx=1, key_or_value=1)
        out = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=1, scale=0.125, sliding_window=8)
        # the act-order form (o_proj's input)
        perm = g.add_weight("o_proj.perm", _tensor(32, dtype=DType.int32))
        permuted = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=1, scale=0.125, perm=perm)
        g.output(out, ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=0, scale=0.125), permuted)
    return g


@example("fg.rope_split_store")
def _paged_fused() -> Graph:
    with Graph("paged_fused", input_types=_paged_inputs()) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, kv = ops.rope_split_store(
            qkv,
            ro,
            freqs,
            kv,
            lens,
            lookup,
            layer_idx=0,
            interleaved=False,
            n_heads=4,
            n_kv_heads=2,
            head_dim=8,
        )
        g.output(q, kv)
    return g


@example("fg.qmatmul.gptq")
def _qmatmul_gptq() -> Graph:
    i32, f16 = DType.int32, DType.float16
    with Graph("gptq", input_types=[_tensor("total_seq_len", 64)]) as g:
        (x,) = g.inputs
        qweight = g.add_weight("q_proj.qweight", _tensor(8, 32, dtype=i32))
        scales = g.add_weight("q_proj.scales", _tensor(2, 32, dtype=f16))
        qzeros = g.add_weight("q_proj.qzeros", _tensor(2, 4, dtype=i32))
        g_idx = g.add_weight("q_proj.g_idx", _tensor(64, dtype=i32))
        asym = ops.qmatmul_gptq(
            x, qweight, scales, qzeros, g_idx, bits=4, group_size=32, sym=False, desc_act=True
        )
        sym = ops.qmatmul_gptq(x, qweight, scales, bits=4, group_size=32, sym=True, desc_act=False, clip=0.5)
        g.output(asym, sym)
    return g


@example("fg.gptq.repack", "fg.qmatmul.gptq_tiled")
def _gptq_tiled() -> Graph:
    i32, f16 = DType.int32, DType.float16
    with Graph("gptq_tiled", input_types=[_tensor("total_seq_len", 256, dtype=f16)]) as g:
        (x,) = g.inputs
        qweight = g.add_weight("q_proj.qweight", _tensor(32, 64, dtype=i32))
        scales = g.add_weight("q_proj.scales", _tensor(2, 64, dtype=f16))
        qzeros = g.add_weight("q_proj.qzeros", _tensor(2, 8, dtype=i32))
        g_idx = g.add_weight("q_proj.g_idx", _tensor(256, dtype=i32))
        act = ops.gptq_repack(qweight, qzeros, g_idx, bits=4, group_size=128, sym=False, desc_act=True)
        sym = ops.gptq_repack(qweight, bits=4, group_size=-1, sym=True, desc_act=False, zero_format="v2")
        one_scale = g.add_weight("k_proj.scales", _tensor(1, 64, dtype=f16))
        g.output(
            ops.qmatmul_gptq_tiled(x, act.qweight, scales, act.qzeros, act.perm, bits=4, group_size=128),
            ops.qmatmul_gptq_tiled(
                x, sym.qweight, one_scale, sym.qzeros, bits=4, group_size=-1, zero_format="v2"
            ),
        )
    return g


@example("fg.gptq.permute_columns")
def _gptq_permute_columns() -> Graph:
    i32, f16 = DType.int32, DType.float16
    with Graph("gptq_permute_columns", input_types=[_tensor(128, dtype=i32)]) as g:
        (perm,) = g.inputs
        qzeros = g.add_weight("gate_up_proj.qzeros", _tensor(2, 32, dtype=i32))
        scales = g.add_weight("gate_up_proj.scales", _tensor(2, 256, dtype=f16))
        g.output(
            ops.gptq_permute_columns(qzeros, perm, parts=2, packed_bits=4),
            ops.gptq_permute_columns(scales, perm, parts=2),
        )
    return g


@example("fg.silu_mul")
def _silu_mul() -> Graph:
    f16 = DType.float16
    with Graph("silu_mul", input_types=[_tensor("t", 64, dtype=f16), _tensor("t", 32, dtype=f16)]) as g:
        gate_up, up = g.inputs
        g.output(ops.silu_mul(gate_up), ops.silu_mul(up, up))
    return g


@example("fg.slice", "fg.gather", "fg.rms_norm", "fg.softmax")
def _slice_norm() -> Graph:
    with Graph("slice_norm", input_types=[_tensor("n", 8, 6), _tensor("m", dtype=DType.uint32)]) as g:
        x, idx = g.inputs
        w = g.add_weight("norm.weight", _tensor(6))
        perm = g.add_weight("norm.perm", _tensor(6, dtype=DType.int32))  # the act-order form
        rows = ops.gather(x[1:, -1], idx, axis=0)
        g.output(
            ops.softmax(ops.rms_norm(rows, w, 1e-5), axis=-1),
            x[-3:, 2:7:3],
            ops.rms_norm(rows, w, 1e-5, perm),
        )
    return g


@example("fg.add_rms_norm")
def _add_rms_norm() -> Graph:
    f16 = DType.float16
    with Graph("add_rms_norm", input_types=[_tensor("t", 8, dtype=f16), _tensor("t", 8, dtype=f16)]) as g:
        x, attn = g.inputs
        w = g.add_weight("norm.weight", _tensor(8, dtype=f16))
        perm = g.add_weight("q_proj.perm", _tensor(8, dtype=DType.int32))
        h, y = ops.add_rms_norm(x, attn, w, 1e-5)
        g.output(y, *ops.add_rms_norm(h, attn, w, 1e-5, perm))
    return g


@example("fg.custom")
def _custom() -> Graph:
    def rule(types: list, params: dict) -> list[TensorType]:
        return [types[0], TensorType(params["out_dtype"], types[0].shape, types[0].device)]

    def impl(x: Any, *, scale: int, out_dtype: DType, fast: bool, note: str) -> tuple[Any, Any]:
        return x * scale, x.to(out_dtype.to_torch())

    ops.register_custom_op("examples.scale_cast", rule, impl)
    with Graph("custom", input_types=[_tensor("n", 4)]) as g:
        (x,) = g.inputs
        params: dict[str, ParamValue] = {
            "scale": 2,
            "out_dtype": DType.bfloat16,
            "fast": False,
            "note": "demo",
        }
        g.output(*ops.custom("examples.scale_cast", [x], params))
    return g


@example("fg.allreduce", "fg.allgather")
def _collective() -> Graph:
    with Graph("collective", input_types=[_tensor("total_seq_len", 8)]) as g:
        (x,) = g.inputs
        reduced = ops.allreduce(x, group="tp", world_size=2)
        g.output(reduced, ops.allgather(x, axis=-1, group="tp", world_size=2))
    return g
