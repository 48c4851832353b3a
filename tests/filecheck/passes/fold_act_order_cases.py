"""FileCheck cases of `fold-act-order-permutation` (written by `generate.py`).

Each input is a graph built with the layers (`MLP`, `GPTQLinear`) or the ops API, already run
through `gptq-repack` (the pass's input in the CUDA pipeline): act-order matmuls are
`fg.qmatmul.gptq_tiled ... perm %p`.
"""

from __future__ import annotations

from collections.abc import Callable

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, TensorValue, ops
from fusegraph.compiler.values import BufferValue
from fusegraph.nn import QuantizationConfig
from fusegraph.nn.linear import GPTQLinear
from fusegraph.nn.mlp import MLP
from fusegraph.passes import PassManager

CPU = DeviceRef.CPU()
F16 = DType.float16
ACT = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False)
H, INTER = 128, 256
Case = tuple[Graph, list[str]]

WHY = [
    "silu(gate) * up has 2 users (its columns are needed unpermuted)",
    "gate is produced by fg.matmul, not fg.qmatmul.gptq_tiled",
    "neither operand of the fg.mul is an fg.silu",
    "the fg.silu has 2 users",
    "x is produced by a graph input, not by silu(gate) * up of GPTQ projections, fg.rms_norm or "
    "reshape(fg.attention.paged)",
    "x is produced by fg.reshape, not by",
    "the attention's output has other users (they need its columns unpermuted)",
    "a buffer is written between the attention and the matmul (the attention cannot move)",
]
HEADER = (
    "// RUN: fusegraph opt %s -p fold-act-order-permutation --split-input-file --debug 2>&1 >/dev/null"
    " | filecheck %s --check-prefix=WHY\n"
    + "".join(
        f"// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{{{[0-9]+}}}}: {w}\n" for w in WHY
    )
    + "// Folded: down_proj's x[:, perm] into the gate/up weights (stacked or separate, with a bias),\n"
    "// the q/k/v and gate/up inputs' into fg.rms_norm perm (one per (norm, perm)), o_proj's into\n"
    "// fg.attention.paged perm.\n"
    "// Left (the matmul keeps perm, the reason in --debug): silu(gate) * up or the silu with another user,\n"
    "// dense gate/up, relu instead of silu, x from a graph input, a reshape after the norm, an attention\n"
    "// output read twice or followed by a cache write before o_proj.\n"
)


def _t(*shape: int | str, dtype: DType = F16) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _repacked(name: str, body: Callable[[Graph, TensorValue], list[TensorValue]]) -> Graph:
    with Graph(name, input_types=[_t("m", H)]) as g:
        g.output(*body(g, g.inputs[0]))
    PassManager("gptq-repack").run(g)
    return g


def _norm(g: Graph, x: TensorValue, name: str = "norm") -> TensorValue:
    return ops.rms_norm(x, g.add_weight(f"{name}.weight", _t(H)), 1e-5)


def _mlp(
    stacked: bool, bias: bool = False, leak: bool = False, layers: int = 1
) -> Callable[..., list[TensorValue]]:
    def body(g: Graph, x: TensorValue) -> list[TensorValue]:
        outs = []
        for li in range(layers):
            mlp = MLP(H, INTER, F16, quant_config=ACT, stacked_gate_up=stacked, has_bias=bias)
            mlp._set_prefix(f"l{li}.mlp.")  # noqa: SLF001 - weight names per layer
            x = mlp(_norm(g, x, f"l{li}.norm"))
        outs.append(x)
        if leak:  # silu(gate) * up is also an output: its columns are needed unpermuted
            mul = next(op for op in g.block.ops if op.name == "fg.mul")
            outs.append(TensorValue(mul.results[0]))
        return outs

    return body


def _shared_repack(g: Graph, x: TensorValue) -> list[TensorValue]:
    """The stacked MLP, and another matmul on gate_up's weights (so `gptq-repack` shares one repack)."""
    mlp = MLP(H, INTER, F16, quant_config=ACT, stacked_gate_up=True)
    mlp._set_prefix("mlp.")  # noqa: SLF001
    y = mlp(_norm(g, x))
    w = mlp.gate_up_proj.weight
    other = ops.qmatmul_gptq(x, w("qweight"), w("scales"), w("qzeros"), w("g_idx"), bits=4, group_size=128,
                             sym=False, desc_act=True)  # fmt: skip
    return [y, other]


def _qkv(shared: bool) -> Callable[..., list[TensorValue]]:
    """rms_norm -> a stacked qkv projection; `shared`: a second matmul on the same repacked
    weights (other scales), so both read one perm and share one permuted norm."""

    def body(g: Graph, x: TensorValue) -> list[TensorValue]:
        h = _norm(g, x)
        qkv = GPTQLinear(H, 2 * H, ACT, F16, CPU)
        qkv._set_prefix("qkv_proj.")  # noqa: SLF001
        outs = [qkv(h)]
        if shared:
            w = qkv.weight
            s2 = g.add_weight("other.scales", _t(1, 2 * H))
            outs.append(ops.qmatmul_gptq(h, w("qweight"), s2, w("qzeros"), w("g_idx"), bits=4, group_size=128,
                                         sym=False, desc_act=True))  # fmt: skip
        return outs

    return body


def _o_proj(g: Graph, x: TensorValue) -> list[TensorValue]:
    o = GPTQLinear(H, H, ACT, F16, CPU)
    o._set_prefix("o_proj.")  # noqa: SLF001
    return [o(x)]


def _attention_o_proj(name: str, leak: bool = False, store_between: bool = False) -> Graph:
    """`o_proj(reshape(fg.attention.paged(q)))` (H = 2 heads x 64); `leak`: the attention is an output too;
    `store_between`: a cache store comes between the attention and o_proj."""
    kv_type = BufferType(F16, [8, 2, 1, 4, 2, 64], CPU)
    meta: list[TensorType | BufferType] = [
        _t("b_plus_1", dtype=DType.uint32),
        kv_type,
        _t("b", dtype=DType.uint32),
        _t("b", 2, dtype=DType.uint32),
    ]
    with Graph(name, input_types=[_t("m", 2, 64), *meta]) as g:
        q, ro, kv, lens, lookup = g.inputs
        attn = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=0, scale=0.125)
        outs: list[TensorValue | BufferValue] = [attn] if leak else []
        if store_between:
            outs.append(ops.kv_cache_store(kv, q, ro, lens, lookup, layer_idx=0, key_or_value=0))
        g.output(_proj(g, "o_proj", H, H)(attn.reshape(["m", H])), *outs)
    PassManager("gptq-repack").run(g)
    return g


def _reshaped_norm(g: Graph, x: TensorValue) -> list[TensorValue]:
    h = _norm(g, x).reshape(["m", 2, 64]).reshape(["m", H])
    o = GPTQLinear(H, H, ACT, F16, CPU)
    o._set_prefix("proj.")  # noqa: SLF001
    return [o(h)]


def _ops_mlp(
    gate_kind: str = "gptq", act: str = "silu", silu_leak: bool = False
) -> Callable[..., list[TensorValue]]:
    """rms_norm -> gate, up (GPTQ act-order, or dense `gate_kind="dense"`) -> act(gate) * up -> GPTQ down."""

    def body(g: Graph, x: TensorValue) -> list[TensorValue]:
        h = _norm(g, x)
        if gate_kind == "dense":
            gate = h @ g.add_weight("gate.weight", _t(H, INTER))
            up = h @ g.add_weight("up.weight", _t(H, INTER))
        else:
            gate, up = (_proj(g, f"{n}_proj", H, INTER)(h) for n in ("gate", "up"))
        a = ops.silu(gate) if act == "silu" else ops.relu(gate)
        y = _proj(g, "down_proj", INTER, H)(a * up)
        return [y, a] if silu_leak else [y]

    return body


def _proj(g: Graph, name: str, k: int, n: int) -> GPTQLinear:
    proj = GPTQLinear(k, n, ACT, F16, CPU)
    proj._set_prefix(f"{name}.")  # noqa: SLF001
    return proj


TILED_NO_PERM = "fg.qmatmul.gptq_tiled %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits"
KEEPS_PERM = "fg.qmatmul.gptq_tiled {{.*}} perm %"


def fold_act_order_cases() -> list[Case]:
    permute = "fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = "
    stacked = [
        "-LABEL: func.func @fold_stacked_gate_up",
        ": %{{.*}}, %{{.*}}, %[[P:[0-9]+]] = fg.gptq.repack",
        f": %[[QZ:[0-9]+]] = {permute}2 : i64, packed_bits = 4 : i64}}",
        f": %[[QW:[0-9]+]] = {permute}2 : i64, packed_bits = 0 : i64}}",
        f": %[[S:[0-9]+]] = {permute}2 : i64, packed_bits = 0 : i64}} : !fg.tensor<[1, 512], f16, cpu>",
        ": %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[GP:[0-9]+]] = fg.gptq.repack %[[QW]] zeros %[[QZ]]",
        ": %[[X:[0-9]+]] = fg.rms_norm %0, %{{[0-9]+}} perm %[[GP]]",
        ": %[[GU:[0-9]+]] = fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %[[S]], %[[ZT]] {bits",
        ": %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %[[GU]]",
        ": %[[SA:[0-9]+]] = fg.silu %[[A]]",
        ": %[[Y:[0-9]+]] = fg.mul %[[SA]], %[[B]]",
        ": fg.qmatmul.gptq_tiled %[[Y]], %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits",
        f"-NOT: {KEEPS_PERM}",
    ]
    separate = [
        "-LABEL: func.func @fold_separate_gate_up_bias",
        ": %{{.*}}, %{{.*}}, %[[P:[0-9]+]] = fg.gptq.repack",
        f"-COUNT-3: {permute}1 : i64",
        ": %[[G:[0-9]+]] = fg.qmatmul.gptq_tiled %[[XG:[0-9]+]], {{.*}} {bits",
        f": %[[BG:[0-9]+]] = {permute}1 : i64, packed_bits = 0 : i64}} : !fg.tensor<[256], f16, cpu>",
        ": %[[GB:[0-9]+]] = fg.add %[[G]], %[[BG]]",
        f"-COUNT-3: {permute}1 : i64",
        ": %[[U:[0-9]+]] = fg.qmatmul.gptq_tiled",
        f": %[[BU:[0-9]+]] = {permute}1 : i64",
        ": %[[UB:[0-9]+]] = fg.add %[[U]], %[[BU]]",
        ": %[[SG:[0-9]+]] = fg.silu %[[GB]]",
        ": %[[Y:[0-9]+]] = fg.mul %[[SG]], %[[UB]]",
        ": fg.qmatmul.gptq_tiled %[[Y]], {{.*}} {bits",
        f"-NOT: {KEEPS_PERM}",
    ]
    qkv = [
        "-LABEL: func.func @fold_norm_qkv",
        ": %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[P:[0-9]+]] = fg.gptq.repack",
        ": %[[X:[0-9]+]] = fg.rms_norm %0, %{{[0-9]+}} perm %[[P]] {eps",
        ": fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits",
        "-NOT: fg.rms_norm",
        ": fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits",
        f"-NOT: {KEEPS_PERM}",
    ]
    layer = [": fg.rms_norm %{{[0-9]+}}, %{{[0-9]+}} perm", f": {TILED_NO_PERM}", f": {TILED_NO_PERM}"]
    multi = [
        "-LABEL: func.func @fold_two_layers",
        *layer,
        f"-NOT: {KEEPS_PERM}",
        *layer,
        f"-NOT: {KEEPS_PERM}",
    ]
    shared = [
        "-LABEL: func.func @fold_keeps_a_shared_repack",
        ": %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[GP:[0-9]+]] = fg.gptq.repack %{{[0-9]+}} zeros",
        ": fg.gptq.repack %{{[0-9]+}} zeros",  # down_proj's
        ": fg.gptq.permute_columns",
        ": %[[QT2:[0-9]+]], %[[ZT2:[0-9]+]], %{{[0-9]+}} = fg.gptq.repack",  # the permuted gate_up weights
        ": fg.qmatmul.gptq_tiled %{{[0-9]+}}, %[[QT2]], %{{[0-9]+}}, %[[ZT2]] {bits",
        ": fg.qmatmul.gptq_tiled %0, %[[QT]], %{{[0-9]+}}, %[[ZT]] perm %[[GP]]",  # the other user: unchanged
    ]
    refused_leak = [
        "-LABEL: func.func @refuse_mul_has_another_user",
        "-NOT: fg.gptq.permute_columns",
        ": fg.rms_norm %0, %{{[0-9]+}} perm",  # the gate_up input is still folded
        f": {KEEPS_PERM}",  # down_proj keeps its perm
        ": func.return",
    ]
    refused = ["-NOT: fg.rms_norm {{.*}} perm", f": {KEEPS_PERM}", ": func.return"]
    attention = [
        "-LABEL: func.func @fold_attention_o_proj",
        ": %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[P:[0-9]+]] = fg.gptq.repack",
        ": %[[A:[0-9]+]] = fg.attention.paged %0, %1, %2, %3, %4 perm %[[P]] {layer_idx = 0 : i64, scale = 1.250000e-01",
        ": %[[X:[0-9]+]] = fg.reshape %[[A]] : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>",
        ": fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits",
        "-NOT: fg.attention.paged",
        f"-NOT: {KEEPS_PERM}",
    ]
    attention_refused = ["-NOT: fg.attention.paged {{.*}} perm", f": {KEEPS_PERM}", ": func.return"]
    return [
        (_repacked("fold_stacked_gate_up", _mlp(stacked=True)), stacked),
        (_repacked("fold_separate_gate_up_bias", _mlp(stacked=False, bias=True)), separate),
        (_repacked("fold_norm_qkv", _qkv(shared=True)), qkv),
        (_repacked("fold_two_layers", _mlp(stacked=True, layers=2)), multi),
        (_repacked("fold_keeps_a_shared_repack", _shared_repack), shared),
        (_repacked("refuse_mul_has_another_user", _mlp(stacked=True, leak=True)), refused_leak),
        (_repacked("refuse_dense_gate_up", _ops_mlp(gate_kind="dense")), ["-LABEL: func.func @refuse_dense_gate_up",
                                                                         *refused]),
        (_repacked("refuse_relu_not_silu", _ops_mlp(act="relu")), ["-LABEL: func.func @refuse_relu_not_silu",
                                                                 "-NOT: fg.gptq.permute_columns", f": {KEEPS_PERM}"]),
        (_repacked("refuse_silu_has_another_user", _ops_mlp(silu_leak=True)),
         ["-LABEL: func.func @refuse_silu_has_another_user", "-NOT: fg.gptq.permute_columns", f": {KEEPS_PERM}"]),
        (_repacked("refuse_o_proj_input", _o_proj), ["-LABEL: func.func @refuse_o_proj_input", *refused]),
        (_repacked("refuse_reshape_after_norm", _reshaped_norm), ["-LABEL: func.func @refuse_reshape_after_norm",
                                                                   *refused]),
        (_attention_o_proj("fold_attention_o_proj"), attention),
        (_attention_o_proj("refuse_attention_read_twice", leak=True),
         ["-LABEL: func.func @refuse_attention_read_twice", *attention_refused]),
        (_attention_o_proj("refuse_cache_written_before_o_proj", store_between=True),
         ["-LABEL: func.func @refuse_cache_written_before_o_proj", *attention_refused]),
    ]  # fmt: skip
