"""Writes the pass FileCheck inputs in this folder from graphs built with the ops API.

Run `python -m tests.filecheck.passes.generate` after changing a case; commit the .mlir
files. Each case is (graph, CHECK lines); the graph is printed with `str(graph)`, so the
inputs are real, verified IR.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fusegraph import BufferType, DType, Graph, TensorType, ops
from tests.filecheck.passes.fold_act_order_cases import HEADER as fold_act_order_header
from tests.filecheck.passes.fold_act_order_cases import fold_act_order_cases
from tests.filecheck.passes.fuse_silu_mul_cases import HEADER as fuse_silu_mul_header
from tests.filecheck.passes.fuse_silu_mul_cases import fuse_silu_mul_cases
from tests.passes.graphs import (
    CPU,
    F32,
    Layer,
    attention_graph,
    fused_graph,
    layer_input_types,
    unfused_graph,
)

HERE = Path(__file__).parent
Case = tuple[Graph, list[str]]
I32 = DType.int32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def write(pass_name: str, cases: list[Case], header: str = "") -> None:
    chunks = []
    for graph, checks in cases:
        # a check starting with a letter names its own prefix (`CANON-LABEL: ...`)
        lines = [f"// {c}" if c[:1].isalpha() else f"// CHECK{c}" for c in checks]
        chunks.append("\n".join(lines) + "\n" + str(graph))
    run = f"// RUN: fusegraph opt %s -p {pass_name} --split-input-file | filecheck %s\n"
    (HERE / f"{pass_name}.mlir").write_text(run + header + "\n" + "// -----\n".join(chunks))


# --- fuse-rope-split-store / unfuse-rope-split-store ----------------------------------
ROPE_GUARDS = {
    "split_user": "split result 0 has another user",
    "reshape_user": "the k reshape has another user",
    "rope_user": "the k rope has another user",
    "interleaved": "the ropes disagree on interleaved",
    "freqs": "the ropes use different freqs_cis",
    "start_pos": "the k rope's start_pos is not the cache lengths",
    "layers": "the stores target different layers",
    "same_kov": "both stores write values",
    "metadata": "the stores use different lookup tables",
    "unchained": "the value store does not take the key store's buffer",
    "split_sizes": "the split has a 4th piece",
    "head_dim": "q is reshaped to other heads than k and v",
}
NOT_UNFUSED = ["-NOT: fg.rope %", "-NOT: fg.kv_cache.store", "-NOT: fg.split", ": func.return"]
# the second RUN line: `canonicalize` first folds the q reshape [T, H, D] -> [T, H*D] with
# attention's reshape back, so the q rope feeds fg.attention.paged directly
CANON_RUN = (
    "// RUN: fusegraph opt %s -p canonicalize,fuse-rope-split-store --split-input-file"
    " | filecheck %s --check-prefix=CANON\n"
)
Q3 = "!fg.tensor<[total_seq_len, 4, 16], f32, cpu>"
Q2_TO_Q3 = f"fg.reshape %{{{{.*}}}} : !fg.tensor<[total_seq_len, 64], f32, cpu> -> {Q3}"


def reshape_free_cases() -> list[Case]:
    """The q rope result used by attention directly: fused, with the q result reshaped back."""
    fused = ": %[[Q:[0-9]+]], %[[KV:[0-9]+]] = fg.rope_split_store %0, %1, %2, %3, %4, %5"
    return [
        (attention_graph(Layer(), "fuse_reshape_free", q_flat=False), ["-LABEL: func.func @fuse_reshape_free", fused,
         f"-NEXT: %[[Q3:[0-9]+]] = {Q2_TO_Q3.replace('%{{.*}}', '%[[Q]]')}",
         "-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5", *NOT_UNFUSED]),
        (attention_graph(Layer(), "canonicalize_then_fuse"), ["-LABEL: func.func @canonicalize_then_fuse", fused,
         f"-NEXT: %[[Q3:[0-9]+]] = {Q2_TO_Q3.replace('%{{.*}}', '%[[Q]]')}",
         "-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5", *NOT_UNFUSED,
         "CANON-LABEL: func.func @canonicalize_then_fuse", f"CANON{fused}",
         f"CANON-NEXT: %[[Q3:[0-9]+]] = {Q2_TO_Q3.replace('%{{.*}}', '%[[Q]]')}",
         "CANON-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5",
         "CANON-NOT: fg.rope %", "CANON-NOT: fg.kv_cache.store", "CANON: func.return"]),
        (attention_graph(Layer(num_layers=3), "canonicalize_then_fuse_three_layers"),
         ["-LABEL: func.func @canonicalize_then_fuse_three_layers", "-COUNT-3: fg.rope_split_store", *NOT_UNFUSED,
          "CANON-LABEL: func.func @canonicalize_then_fuse_three_layers",
          *[f"CANON: fg.rope_split_store {{{{.*}}}} {{layer_idx = {i} : i64" for i in range(3)],
          "CANON-NOT: fg.rope %", "CANON-NOT: fg.kv_cache.store", "CANON: func.return"]),
    ]  # fmt: skip


def rope_cases() -> list[Case]:
    cases: list[Case] = [
        (unfused_graph(Layer(), "fuse_one"), ["-LABEL: func.func @fuse_one", ": %{{.*}}, %{{.*}} = fg.rope_split_store %0, %1, %2, %3, %4, %5 {layer_idx = 0 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false}", *NOT_UNFUSED]),
        (unfused_graph(Layer(interleaved=True, n_kv_heads=4), "fuse_interleaved_mha"), ["-LABEL: func.func @fuse_interleaved_mha", ": fg.rope_split_store {{.*}}n_heads = 4 : i64, n_kv_heads = 4 : i64, head_dim = 16 : i64, interleaved = true", *NOT_UNFUSED]),
        (unfused_graph(Layer(num_layers=4), "fuse_four_layers"), ["-LABEL: func.func @fuse_four_layers", "-COUNT-4: fg.rope_split_store", *NOT_UNFUSED]),
    ]  # fmt: skip
    for brk, why in ROPE_GUARDS.items():
        name = f"refuse_{brk}"
        checks = [
            f"-LABEL: func.func @{name}",
            "-NOT: fg.rope_split_store",
            ": fg.kv_cache.store",
            ": func.return",
        ]
        cases.append((unfused_graph(Layer(breaks=frozenset([brk])), name), checks))
    return cases


def unfuse_cases() -> list[Case]:
    one = ["-LABEL: func.func @unfuse_one", ": fg.split %0 {axis = 1 : i64}", ": fg.reshape", ": fg.reshape", ": fg.reshape",
           ": fg.rope %{{.*}} {interleaved = false}", ": fg.rope %{{.*}} {interleaved = false}",
           ": fg.kv_cache.store %3, {{.*}} {layer_idx = 0 : i64, key_or_value = 0 : i64}",
           ": fg.kv_cache.store {{.*}} {layer_idx = 0 : i64, key_or_value = 1 : i64}",
           ": fg.reshape {{.*}} -> !fg.tensor<[total_seq_len, 64], f32, cpu>", "-NOT: fg.rope_split_store"]  # fmt: skip
    four = [
        "-LABEL: func.func @unfuse_four_layers",
        "-COUNT-8: fg.kv_cache.store",
        "-NOT: fg.rope_split_store",
    ]
    return [
        (fused_graph(Layer(), "unfuse_one"), one),
        (fused_graph(Layer(num_layers=4), "unfuse_four_layers"), four),
    ]


# --- fuse-qkv-projections -------------------------------------------------------------
def _linear_qkv(
    name: str, *, n: int = 3, mixed: bool = False, early_use: bool = False, layers: int = 1
) -> Graph:
    with Graph(name, input_types=[_t("T", 64)] * layers) as g:
        outs = []
        for li, x in enumerate(g.inputs):
            projs = []
            for i, (p, width) in enumerate((("q", 64), ("k", 32), ("v", 32))[:n]):
                if mixed and i == 2:  # a [K, N] weight used as is, next to two `W.T`s
                    projs.append(x @ g.add_weight(f"layers.{li}.{p}_proj.weight_t", _t(64, width)))
                    continue
                projs.append(x @ g.add_weight(f"layers.{li}.{p}_proj.weight", _t(width, 64)).T)
                if early_use and i == 0:
                    projs[0] = ops.relu(projs[0])
            outs += projs
        g.output(*outs)
    return g


def _plain_qkv(name: str) -> Graph:
    with Graph(name, input_types=[_t("T", 64)]) as g:
        (x,) = g.inputs
        g.output(
            *(x @ g.add_weight(f"{p}_proj.weight_t", _t(64, w)) for p, w in (("q", 64), ("k", 32), ("v", 32)))
        )
    return g


def _gptq_qkv(
    name: str,
    *,
    bits: tuple[int, int, int] = (4, 4, 4),
    zeros: int = 3,
    shared_g_idx: bool = True,
    no_g_idx: bool = False,
) -> Graph:
    """Three GPTQ projections of one input; `no_g_idx`: as GPTQLinear emits them without desc_act."""
    with Graph(name, input_types=[_t("T", 64)]) as g:
        (x,) = g.inputs
        g_idx = None if no_g_idx else g.add_weight("g_idx", _t(64, dtype=I32))
        outs = []
        for i, (p, n) in enumerate((("q", 64), ("k", 32), ("v", 32))):
            b = bits[i]
            qw = g.add_weight(f"{p}.qweight", _t(64 * b // 32, n, dtype=I32))
            sc = g.add_weight(f"{p}.scales", _t(2, n))
            qz = g.add_weight(f"{p}.qzeros", _t(2, n * b // 32, dtype=I32)) if i < zeros else None
            gi = g_idx if shared_g_idx or i == 0 else g.add_weight(f"{p}.g_idx", _t(64, dtype=I32))
            outs.append(ops.qmatmul_gptq(x, qw, sc, qz, gi, bits=b, group_size=32, sym=True, desc_act=False))
        g.output(*outs)
    return g


def qkv_cases() -> list[Case]:
    fused_linear = [": fg.concat {{.*}} {axis = 0 : i64}", ": fg.permute {{.*}} {perm = array<i64: 1, 0>} : !fg.tensor<[128, 64], f32, cpu> -> !fg.tensor<[64, 128], f32, cpu>",
                    ": fg.matmul %0, ", ": fg.split {{.*}} {axis = 1 : i64} : !fg.tensor<[T, 128], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>",
                    "-NOT: fg.matmul", ": func.return"]  # fmt: skip
    refuse = ["-NOT: fg.split", ": func.return"]
    return [
        (_linear_qkv("fuse_linear"), ["-LABEL: func.func @fuse_linear", *fused_linear]),
        (_plain_qkv("fuse_plain"), ["-LABEL: func.func @fuse_plain", ": fg.concat {{.*}} {axis = 1 : i64}", ": fg.matmul", ": fg.split", "-NOT: fg.matmul", ": func.return"]),
        (_gptq_qkv("fuse_gptq"), ["-LABEL: func.func @fuse_gptq", ": fg.concat", ": fg.concat", ": fg.concat", ": fg.qmatmul.gptq %0, {{.*}} zeros {{.*}} g_idx %1 {bits = 4 : i64", ": fg.split", "-NOT: fg.qmatmul.gptq", ": func.return"]),
        (_gptq_qkv("fuse_gptq_no_g_idx", no_g_idx=True), ["-LABEL: func.func @fuse_gptq_no_g_idx", ": fg.qmatmul.gptq %0, %{{[0-9]+}}, %{{[0-9]+}} zeros %{{[0-9]+}} {bits = 4 : i64", ": fg.split", "-NOT: fg.qmatmul.gptq", ": func.return"]),
        (_gptq_qkv("fuse_gptq_sym_no_zeros", zeros=0), ["-LABEL: func.func @fuse_gptq_sym_no_zeros", ": fg.qmatmul.gptq %0, %{{[0-9]+}}, %{{[0-9]+}} g_idx", ": fg.split"]),
        (_linear_qkv("fuse_four_layers", layers=4), ["-LABEL: func.func @fuse_four_layers", "-COUNT-4: fg.split", "-NOT: fg.matmul %{{[0-9]+}}, %{{[0-9]+}} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64]"]),
        (_linear_qkv("refuse_two_projections", n=2), ["-LABEL: func.func @refuse_two_projections", *refuse]),
        (_linear_qkv("refuse_mixed_layout", mixed=True), ["-LABEL: func.func @refuse_mixed_layout", *refuse]),
        (_linear_qkv("refuse_used_before_last", early_use=True), ["-LABEL: func.func @refuse_used_before_last", *refuse]),
        (_gptq_qkv("refuse_gptq_bits", bits=(4, 4, 8)), ["-LABEL: func.func @refuse_gptq_bits", *refuse]),
        (_gptq_qkv("refuse_gptq_zeros", zeros=2), ["-LABEL: func.func @refuse_gptq_zeros", *refuse]),
        (_gptq_qkv("refuse_gptq_g_idx", shared_g_idx=False), ["-LABEL: func.func @refuse_gptq_g_idx", *refuse]),
    ]  # fmt: skip


# --- canonicalize / cse / dce ---------------------------------------------------------
def _graph(name: str, body: Callable, *types: TensorType | BufferType) -> Graph:  # type: ignore[type-arg]
    with Graph(name, input_types=list(types or [_t("T", 64)])) as g:
        out = body(*g.inputs)
        g.output(*(out if isinstance(out, (list, tuple)) else [out]))
    return g


def canonicalize_cases() -> list[Case]:
    x = _t("T", 64)
    return [
        (_graph("reshape_reshape_identity", lambda x: x.reshape(["T", 4, 16]).reshape(["T", 64])), ["-LABEL: func.func @reshape_reshape_identity", "-NEXT: func.return %0"]),
        (_graph("reshape_reshape", lambda x: x.reshape(["T", 4, 16]).reshape(["T", 2, 32])), ["-LABEL: func.func @reshape_reshape", "-NEXT: fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 2, 32], f32, cpu>", "-NEXT: func.return"]),
        (_graph("keep_reshape_of_relu", lambda x: ops.relu(x).reshape(["T", 4, 16])), ["-LABEL: func.func @keep_reshape_of_relu", "-NEXT: fg.relu", "-NEXT: fg.reshape"]),
        (_graph("cast_same_dtype", lambda x: ops.cast(x, F32)), ["-LABEL: func.func @cast_same_dtype", "-NEXT: func.return %0"]),
        (_graph("keep_cast_other_dtype", lambda x: ops.cast(x, DType.float16)), ["-LABEL: func.func @keep_cast_other_dtype", "-NEXT: fg.cast"]),
        (_graph("permute_permute_identity", lambda x: ops.permute(ops.permute(x, [1, 0]), [1, 0])), ["-LABEL: func.func @permute_permute_identity", "-NEXT: func.return %0"]),
        (_graph("permute_permute", lambda x: ops.permute(ops.permute(x, [1, 2, 0]), [1, 2, 0]), _t(2, 3, 4)), ["-LABEL: func.func @permute_permute", "-NEXT: fg.permute %0 {perm = array<i64: 2, 0, 1>} : !fg.tensor<[2, 3, 4], f32, cpu> -> !fg.tensor<[4, 2, 3], f32, cpu>", "-NEXT: func.return"]),
        (_graph("keep_permute", lambda x: ops.permute(x, [1, 0])), ["-LABEL: func.func @keep_permute", "-NEXT: fg.permute"]),
        (_graph("split_concat", lambda x, y: ops.split(ops.concat([x, y, x], axis=1), [64, 64, 64], axis=1), x, x), ["-LABEL: func.func @split_concat", "-NEXT: func.return %0, %1, %0"]),
        (_graph("keep_split_concat_other_sizes", lambda x, y: ops.split(ops.concat([x, y], axis=1), [32, 96], axis=1), x, x), ["-LABEL: func.func @keep_split_concat_other_sizes", "-NEXT: fg.concat", "-NEXT: fg.split"]),
        (_graph("keep_split_concat_other_axis", lambda x, y: ops.split(ops.concat([x, y], axis=0), [32, 32], axis=1), x, x), ["-LABEL: func.func @keep_split_concat_other_axis", "-NEXT: fg.concat", "-NEXT: fg.split"]),
        (_graph("concat_split", lambda x: ops.concat(ops.split(x, [16, 48], axis=1), axis=1)), ["-LABEL: func.func @concat_split", "-NEXT: func.return %0"]),
        (_graph("keep_concat_split_reordered", lambda x: ops.concat(ops.split(x, [32, 32], axis=1)[::-1], axis=1)), ["-LABEL: func.func @keep_concat_split_reordered", "-NEXT: fg.split", "-NEXT: fg.concat"]),
    ]  # fmt: skip


def _two_stores(kv_in: bool):  # type: ignore[no-untyped-def]
    def body(qkv, ro, freqs, kv, lens, lookup):  # type: ignore[no-untyped-def]
        x = qkv[:, :32].reshape([qkv.shape[0], 2, 16])
        a = ops.kv_cache_store(kv, x, ro, lens, lookup, layer_idx=0, key_or_value=0)
        b = ops.kv_cache_store(kv, x, ro, lens, lookup, layer_idx=0, key_or_value=0)
        return [a, b] if kv_in else [ops.relu(x)]

    return body


def cse_cases() -> list[Case]:
    lt = layer_input_types(Layer())
    return [
        (_graph("merge_reshapes", lambda x: x.reshape(["T", 4, 16]) + x.reshape(["T", 4, 16])), ["-LABEL: func.func @merge_reshapes", "-NEXT: %1 = fg.reshape %0", "-NEXT: fg.add %1, %1"]),
        (_graph("keep_different_reshapes", lambda x: (x.reshape(["T", 4, 16]), x.reshape(["T", 2, 32]))), ["-LABEL: func.func @keep_different_reshapes", "-NEXT: fg.reshape", "-NEXT: fg.reshape"]),
        (_graph("keep_twin_stores", _two_stores(True), *lt), ["-LABEL: func.func @keep_twin_stores", "-COUNT-2: fg.kv_cache.store", "-NEXT: func.return"]),
        (_graph("keep_unused_twin_stores", _two_stores(False), *lt), ["-LABEL: func.func @keep_unused_twin_stores", "-COUNT-2: fg.kv_cache.store"]),
    ]  # fmt: skip


def dce_cases() -> list[Case]:
    lt = layer_input_types(Layer())
    return [
        (_graph("erase_dead_relu", lambda x: [ops.exp(ops.relu(x)), x][1]), ["-LABEL: func.func @erase_dead_relu", "-NEXT: func.return %0"]),
        (_graph("keep_live_relu", lambda x: ops.relu(x)), ["-LABEL: func.func @keep_live_relu", "-NEXT: fg.relu"]),
        (_graph("keep_unused_stores", _two_stores(False), *lt), ["-LABEL: func.func @keep_unused_stores", "-COUNT-2: fg.kv_cache.store", "-NEXT: fg.relu"]),
    ]  # fmt: skip


def _gptq_graph(name: str, layers: list[dict], k: int = 256, n: int = 128) -> Graph:
    """One input x [m, k] f16 and a qmatmul per entry (bits, group_size, desc_act, clip, shared)."""
    f16 = DType.float16
    with Graph(name, input_types=[_t("m", k, dtype=f16)]) as g:
        (x,) = g.inputs
        outs, made = [], {}
        for i, p in enumerate(layers):
            bits, gs = p.get("bits", 4), p.get("group_size", 128)
            groups = 1 if gs == -1 else k // gs
            key = p.get("shared", i)
            if key not in made:
                made[key] = (
                    g.add_weight(f"l{key}.qweight", _t(k * bits // 32, n, dtype=I32)),
                    g.add_weight(f"l{key}.scales", _t(groups, n, dtype=f16)),
                    g.add_weight(f"l{key}.qzeros", _t(groups, n * bits // 32, dtype=I32)),
                    g.add_weight(f"l{key}.g_idx", _t(k, dtype=I32)),
                )
            qw, sc, qz, gi = made[key]
            outs.append(ops.qmatmul_gptq(x, qw, sc, qz, gi, bits=bits, group_size=gs, sym=False,
                                         desc_act=p.get("desc_act", False), clip=p.get("clip")))  # fmt: skip
        g.output(*outs)
    return g


def gptq_repack_cases() -> list[Case]:
    return [
        (_gptq_graph("plain_4bit", [{}]), [
            "-LABEL: func.func @plain_4bit",
            ": %[[QT:.*]], %[[ZT:.*]] = fg.gptq.repack %{{.*}} zeros %{{.*}} g_idx %{{.*}} {bits = 4 : i64, "
            "group_size = 128 : i64, sym = false, desc_act = false, zero_format = \"v1\"} {{.*}} -> "
            "!fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>",
            ": fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]] {bits = 4 : i64, group_size = 128 : i64",
            "-NOT: fg.qmatmul.gptq %",
        ]),
        (_gptq_graph("act_order_8bit", [{"bits": 8, "desc_act": True}]), [
            "-LABEL: func.func @act_order_8bit",
            ": %[[QT:.*]], %[[ZT:.*]], %[[P:.*]] = fg.gptq.repack {{.*}}desc_act = true{{.*}} -> "
            "!fg.tensor<[2, 64, 64], i32, cpu>, !fg.tensor<[2, 32], i32, cpu>, !fg.tensor<[256], i32, cpu>",
            ": fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]] perm %[[P]] {bits = 8 : i64",
        ]),
        (_gptq_graph("shared_weights", [{"shared": 0}, {"shared": 0}, {"bits": 2, "group_size": -1}]), [
            "-LABEL: func.func @shared_weights",
            ": %[[QT:.*]], %[[ZT:.*]] = fg.gptq.repack {{.*}}bits = 4",
            "-NOT: fg.gptq.repack",
            ": fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]]",
            "-NOT: fg.gptq.repack",
            ": fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]]",
            ": %[[QT2:.*]], %[[ZT2:.*]] = fg.gptq.repack {{.*}}bits = 2{{.*}}group_size = -1{{.*}} -> "
            "!fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>",
            ": fg.qmatmul.gptq_tiled %0, %[[QT2]], %{{.*}}, %[[ZT2]] {bits = 2",
        ]),
        (_gptq_graph("refuse_clip", [{"clip": 0.5}]), [
            "-LABEL: func.func @refuse_clip", "-NOT: fg.gptq.repack", ": fg.qmatmul.gptq %",
        ]),
        (_gptq_graph("refuse_group_64", [{"group_size": 64}]), [
            "-LABEL: func.func @refuse_group_64", "-NOT: fg.gptq.repack", ": fg.qmatmul.gptq %",
        ]),
        (_gptq_graph("refuse_n_96", [{}], n=96), [
            "-LABEL: func.func @refuse_n_96", "-NOT: fg.gptq.repack", ": fg.qmatmul.gptq %",
        ]),
    ]  # fmt: skip


def main() -> None:
    write(
        "fuse-rope-split-store",
        rope_cases() + reshape_free_cases(),
        CANON_RUN
        + "// Guards, one refusal case each: "
        + "; ".join(f"refuse_{k}: {v}" for k, v in ROPE_GUARDS.items())
        + "\n",
    )
    write(
        "unfuse-rope-split-store",
        unfuse_cases(),
        "// The pass has no guards: every fg.rope_split_store unfuses.\n",
    )
    write("fuse-qkv-projections", qkv_cases())
    write("canonicalize", canonicalize_cases())
    write("cse", cse_cases())
    write("dce", dce_cases())
    write("fold-act-order-permutation", fold_act_order_cases(), fold_act_order_header)
    write("fuse-silu-mul", fuse_silu_mul_cases(), fuse_silu_mul_header)
    write(
        "gptq-repack",
        gptq_repack_cases(),
        "// Refused (the op stays): a clip, group_size 64 (not a multiple of 128), N = 96 (not of 64).\n",
    )


if __name__ == "__main__":
    main()
