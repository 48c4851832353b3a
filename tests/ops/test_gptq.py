"""fg.qmatmul.gptq: numerics against a dense reference written from the math, with an
independent bit packer; packing helpers; shape-rule errors; tracing and opcheck."""

from __future__ import annotations

import re
from typing import Any, Literal, cast

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, TensorValue, ops
from fusegraph.compiler import IRVerifyError
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.dialect import parse
from fusegraph.ops.gptq import (
    QMatmulGptqOp,
    act_order_g_idx,
    dequantize,
    pack,
    pack_rows,
    qmatmul_decomposed,
    unpack,
    unpack_rows,
)

CPU = DeviceRef.CPU()
K, N, M = 128, 32, 4
BITS = [2, 3, 4, 8]


# --- an independent reference: GPTQ tensors built from q, z, s by a slow bit packer ------
def _to_int32(word: int) -> int:
    return word - (1 << 32) if word >= 1 << 31 else word


def _ref_pack_1d(vals: list[int], bits: int) -> list[int]:
    """Pack a list of values into int32 words, as AutoGPTQ's QuantLinear.pack does."""
    words = []
    if bits != 3:
        per = 32 // bits
        for start in range(0, len(vals), per):
            words.append(sum(v << (bits * i) for i, v in enumerate(vals[start : start + per])))
    else:  # AutoGPTQ: 10 values | 2 bits of the 11th; 1 bit, 10 values | 1 bit of the 22nd; 2 bits, 10 values
        for i in range(0, len(vals), 32):
            v = vals[i : i + 32]
            w0 = sum(v[j] << (3 * j) for j in range(10)) | ((v[10] << 30) & 0xFFFFFFFF)
            w1 = (
                ((v[10] >> 2) & 1)
                | sum(v[11 + j] << (3 * j + 1) for j in range(10))
                | ((v[21] << 31) & 0xFFFFFFFF)
            )
            w2 = ((v[21] >> 1) & 3) | sum(v[22 + j] << (3 * j + 2) for j in range(10))
            words += [w0, w1, w2]
    return [_to_int32(w) for w in words]


def _ref_pack(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack an integer matrix along `dim` (0: qweight layout, 1: qzeros layout)."""
    mat = values if dim == 0 else values.t()
    cols = [_ref_pack_1d(mat[:, c].tolist(), bits) for c in range(mat.shape[1])]
    packed = torch.tensor(cols, dtype=torch.int32).t()
    return packed if dim == 0 else packed.t()


def _ref_case(bits: int, sym: bool, desc_act: bool, zero_format: str, group_size: int, seed: int = 0):
    """Random q, z, s (and act-order g_idx); W_dense = (q - z[g]) * s[g]; packed tensors."""
    gen = torch.Generator().manual_seed(seed)
    gs = K if group_size == -1 else group_size
    groups = K // gs
    q = torch.randint(0, 2**bits, (K, N), generator=gen)
    lowest = 1 if zero_format == "v1" else 0  # v1 stores z - 1, so z = 0 is not representable
    z = (
        torch.full((groups, N), 2 ** (bits - 1))
        if sym
        else torch.randint(lowest, 2**bits, (groups, N), generator=gen)
    )
    s = (torch.rand(groups, N, generator=gen) * 0.1 + 0.01).to(torch.float16)
    g_idx = None
    group_of_row = torch.arange(K) // gs
    if desc_act:
        perm = torch.randperm(K, generator=gen)
        group_of_row = torch.empty(K, dtype=torch.int64)
        for position, row in enumerate(perm.tolist()):
            group_of_row[row] = position // gs
        g_idx = group_of_row.to(torch.int32)
    w_dense = (q - z[group_of_row]).to(torch.float32) * s.to(torch.float32)[group_of_row]
    stored_z = (z - 1) % 2**bits if zero_format == "v1" else z
    qzeros = None if sym else _ref_pack(stored_z, bits, dim=1)
    return (
        {"qweight": _ref_pack(q, bits, dim=0), "scales": s, "qzeros": qzeros, "g_idx": g_idx},
        q,
        z,
        w_dense,
    )


def _graph_op(t: dict, x_dtype: DType = DType.float32, **params) -> QMatmulGptqOp:
    """Build fg.qmatmul.gptq in a graph for tensors `t`; return the op."""
    with Graph("gptq", input_types=[TensorType(x_dtype, ["m", K], CPU)]) as g:
        (x,) = g.inputs
        w = {
            name: None
            if v is None
            else g.add_weight(name, TensorType(DType.from_torch(v.dtype), list(v.shape), CPU))
            for name, v in t.items()
        }
        qweight, scales = cast(TensorValue, w["qweight"]), cast(TensorValue, w["scales"])
        y = ops.qmatmul_gptq(x, qweight, scales, w["qzeros"], w["g_idx"], **params)
        g.output(y)
    g.verify()
    return cast(QMatmulGptqOp, y.ssa.owner)


def _run(op: QMatmulGptqOp, x: torch.Tensor, t: dict, mode: Literal["custom", "decomposed"]) -> torch.Tensor:
    args = (t["qweight"], t["scales"], t["qzeros"], t["g_idx"])
    return get_torch_impl(op)(op, x, *args, ctx=LoweringContext(mode=mode))


def _assert_close(out: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


# --- numerics -------------------------------------------------------------------------
@pytest.mark.parametrize("group_size", [32, K, -1])
@pytest.mark.parametrize("zero_format", ["v1", "v2"])
@pytest.mark.parametrize("desc_act", [False, True])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_qmatmul_matches_dense_reference(bits, sym, desc_act, zero_format, group_size) -> None:
    t, _, _, w_dense = _ref_case(bits, sym, desc_act, zero_format, group_size)
    params = dict(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act, zero_format=zero_format)
    op = _graph_op(t, **params)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    for mode in ("custom", "decomposed"):
        _assert_close(_run(op, x, t, mode), x @ w_dense)


@pytest.mark.parametrize("zero_format", ["v1", "v2"])
@pytest.mark.parametrize("bits", BITS)
def test_qmatmul__sym_uses_qzeros_when_present(bits, zero_format) -> None:
    t, _, _, w_dense = _ref_case(bits, False, False, zero_format, 32)
    op = _graph_op(t, bits=bits, group_size=32, sym=True, desc_act=False, zero_format=zero_format)
    x = torch.randn(M, K)
    _assert_close(_run(op, x, t, "decomposed"), x @ w_dense)


def test_qmatmul__clip_clamps_the_dequantized_weight() -> None:
    t, _, _, w_dense = _ref_case(4, False, True, "v2", 32)
    op = _graph_op(t, bits=4, group_size=32, sym=False, desc_act=True, zero_format="v2", clip=0.2)
    x = torch.randn(M, K)
    ref = x @ w_dense.clamp(-0.2, 0.2)
    assert not torch.allclose(x @ w_dense, ref), "the case must have weights beyond the clip"
    for mode in ("custom", "decomposed"):
        _assert_close(_run(op, x, t, mode), ref)


def test_qmatmul__result_has_x_dtype() -> None:
    t, _, _, w_dense = _ref_case(4, False, False, "v1", 32)
    op = _graph_op(t, x_dtype=DType.bfloat16, bits=4, group_size=32, sym=False, desc_act=False)
    assert op.result.type.dtype == DType.bfloat16
    x = torch.randn(M, K).to(torch.bfloat16)
    out = _run(op, x, t, "custom")
    assert out.dtype == torch.bfloat16
    _assert_close(out.float(), x.float() @ w_dense, rtol=2e-2)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_argsort_path_equals_g_idx_path(bits, sym) -> None:
    t, _, _, w_dense = _ref_case(bits, sym, True, "v1", 32)
    x = torch.randn(M, K)
    params = dict(bits=bits, group_size=32, sym=sym, zero_format="v1")
    by_g_idx = qmatmul_decomposed(x, *t.values(), **params, method="g_idx")
    by_argsort = qmatmul_decomposed(x, *t.values(), **params, method="argsort")
    _assert_close(by_argsort, by_g_idx, rtol=1e-5)
    _assert_close(by_argsort, x @ w_dense)


def test_end_to_end_through_fusegraph_compile() -> None:
    t, _, _, w_dense = _ref_case(3, False, True, "v2", 32)
    with Graph("gptq_e2e", input_types=[TensorType(DType.float32, ["total_seq_len", K], CPU)]) as g:
        (x,) = g.inputs
        w = {
            n: g.add_weight(f"q_proj.{n}", TensorType(DType.from_torch(v.dtype), list(v.shape), CPU))
            for n, v in t.items()
        }
        g.output(
            ops.relu(
                ops.qmatmul_gptq(
                    x, *w.values(), bits=3, group_size=32, sym=False, desc_act=True, zero_format="v2"
                )
            )
        )
    model = fusegraph.compile(
        g, backend="eager", device="cpu", weights={f"q_proj.{n}": v for n, v in t.items()}
    )
    for rows in (1, 5):
        xs = torch.randn(rows, K)
        (y,) = model(xs)
        _assert_close(y, torch.relu(xs @ w_dense))


# --- packing helpers ------------------------------------------------------------------
@pytest.mark.parametrize("zero_format", ["v1", "v2"])
@pytest.mark.parametrize("bits", BITS)
def test_unpack_inverts_the_reference_packing(bits, zero_format) -> None:
    t, q, z, _ = _ref_case(bits, False, False, zero_format, 32)
    got_q, got_z = unpack(t["qweight"], t["qzeros"], bits=bits, zero_format=zero_format)
    assert torch.equal(got_q, q.to(torch.int32))
    assert torch.equal(got_z, z.to(torch.int32))
    _, z_sym = unpack(t["qweight"], None, bits=bits, num_groups=4)
    assert torch.equal(z_sym, torch.full((4, N), 2 ** (bits - 1), dtype=torch.int32))


def test_unpack__v1_adds_one_back_without_masking_as_autogptq() -> None:
    all_ones = torch.full((1, N * 4 // 32), -1, dtype=torch.int32)  # every stored z - 1 is 15
    _, z = unpack(torch.zeros(K * 4 // 32, N, dtype=torch.int32), all_ones, bits=4, zero_format="v1")
    assert torch.equal(z, torch.full((1, N), 16, dtype=torch.int32))


@pytest.mark.parametrize("bits", BITS)
def test_pack_rows_matches_the_reference_packer(bits) -> None:
    values = torch.randint(0, 2**bits, (K, N), generator=torch.Generator().manual_seed(3))
    packed = pack_rows(values, bits)
    assert packed.dtype == torch.int32 and packed.shape == (K * bits // 32, N)
    assert torch.equal(packed, _ref_pack(values, bits, dim=0))
    assert torch.equal(unpack_rows(packed, bits), values)


def test_three_bit_values_straddle_words_as_in_autogptq() -> None:
    values = torch.zeros(32, 1, dtype=torch.int64)
    values[10], values[21] = 0b101, 0b011  # value 10: bits 30..32, value 21: bits 63..65
    words = [w & 0xFFFFFFFF for w in pack_rows(values, 3)[:, 0].tolist()]
    assert words == [0b01 << 30, 0b1 | (0b1 << 31), 0b01]


@pytest.mark.parametrize("desc_act", [False, True])
@pytest.mark.parametrize("zero_format", ["v1", "v2"])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_pack_rtn_error_within_half_a_scale_and_unpacks(bits, sym, zero_format, desc_act) -> None:
    weight = torch.randn(N, K, generator=torch.Generator().manual_seed(4))
    weight[:, :32] = weight[:, :32].abs()  # a non-negative group: v1 must still encode it
    t = pack(weight, bits=bits, group_size=32, sym=sym, desc_act=desc_act, zero_format=zero_format)
    assert t["qweight"].shape == (K * bits // 32, N) and t["qzeros"].shape == (K // 32, N * bits // 32)
    assert t["scales"].dtype == torch.float16 and t["g_idx"].dtype == torch.int32
    q, z = unpack(t["qweight"], t["qzeros"], bits=bits, zero_format=zero_format)
    g = t["g_idx"].long()
    s = t["scales"].float()
    w_from_q = (q - z[g]).float() * s[g]
    w = dequantize(
        t["qweight"],
        t["scales"],
        t["qzeros"],
        t["g_idx"],
        bits=bits,
        group_size=32,
        sym=sym,
        zero_format=zero_format,
    )
    torch.testing.assert_close(w, w_from_q)
    assert (w - weight.t()).abs().le(s[g] / 2 * (1 + 1e-5) + 1e-7).all()


def test_pack__act_order_groups_rows_in_perm_order() -> None:
    perm = torch.randperm(K, generator=torch.Generator().manual_seed(5))
    t = pack(torch.randn(N, K), bits=4, group_size=32, sym=True, desc_act=True, perm=perm)
    assert torch.equal(t["g_idx"][perm].long(), torch.arange(K) // 32)
    assert torch.equal(act_order_g_idx(perm, 32), t["g_idx"])
    default = pack(torch.randn(N, K), bits=4, group_size=32, sym=True, desc_act=True)["g_idx"]
    assert torch.equal(torch.bincount(default.long()), torch.full((4,), 32))
    plain = pack(torch.randn(N, K), bits=4, group_size=-1, sym=True)["g_idx"]
    assert torch.equal(plain, torch.zeros(K, dtype=torch.int32))


def test_pack_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"group_size \(48\) must be -1 or a positive divisor of K \(128\)"):
        pack(torch.randn(N, K), bits=4, group_size=48, sym=True)
    with pytest.raises(ValueError, match=r"bits must be one of 2, 3, 4, 8, got 5"):
        pack(torch.randn(N, K), bits=5, group_size=32, sym=True)
    with pytest.raises(ValueError, match=r"zero_format must be one of v1, v2, got 'v3'"):
        pack(torch.randn(N, K), bits=4, group_size=32, sym=True, zero_format="v3")
    with pytest.raises(ValueError, match=r"perm .* needs desc_act=True"):
        pack(torch.randn(N, K), bits=4, group_size=32, sym=True, perm=torch.arange(K))


# --- torch.library and tracing ---------------------------------------------------------
@pytest.mark.parametrize(("bits", "sym", "desc_act", "clip"), [(4, False, True, None), (3, True, False, 0.3)])
def test_opcheck_qmatmul_gptq(bits, sym, desc_act, clip) -> None:
    t, *_ = _ref_case(bits, sym, desc_act, "v1", 32)
    args = (torch.randn(M, K), *t.values(), bits, 32, sym, "v1", clip)
    torch.library.opcheck(torch.ops.fusegraph.qmatmul_gptq.default, args)


def test_decomposition_traces_with_symbolic_m_into_simple_aten_ops() -> None:
    t, _, _, w_dense = _ref_case(3, False, True, "v1", 32)
    op = _graph_op(t, bits=3, group_size=32, sym=False, desc_act=True)

    def fn(x, qweight, scales, qzeros, g_idx):
        return get_torch_impl(op)(
            op, x, qweight, scales, qzeros, g_idx, ctx=LoweringContext(mode="decomposed")
        )

    gm = make_fx(fn, tracing_mode="symbolic")(torch.randn(M, K), *t.values())
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert not any("fusegraph" in name for name in targets), targets
    assert any("index_select" in name for name in targets) and any("shift" in name for name in targets)
    assert not any(name.startswith("aten.index.") for name in targets), targets
    for rows in (1, 7):
        x = torch.randn(rows, K)
        _assert_close(gm(x, *t.values()), x @ w_dense)


# --- shape rule -----------------------------------------------------------------------
def _types(bits=4, k=K, n=N, groups=4, x_dtype=DType.float32, scale_dtype=DType.float16, qweight_rows=None):
    return {
        "x": TensorType(x_dtype, ["m", k], CPU),
        "qweight": TensorType(
            DType.int32, [k * bits // 32 if qweight_rows is None else qweight_rows, n], CPU
        ),
        "scales": TensorType(scale_dtype, [groups, n], CPU),
        "qzeros": TensorType(DType.int32, [groups, n * bits // 32], CPU),
        "g_idx": TensorType(DType.int32, [k], CPU),
    }


def _build(types: dict, drop=(), **overrides):
    params: dict[str, Any] = (
        dict(bits=4, group_size=32, sym=False, desc_act=True, zero_format="v1") | overrides
    )
    present = {name: t for name, t in types.items() if name not in drop}
    with Graph("g", input_types=list(present.values())) as g:
        values = dict(zip(present, g.inputs, strict=True))
        x, qweight, scales, qzeros, g_idx = (
            values.get(n) for n in ("x", "qweight", "scales", "qzeros", "g_idx")
        )
        # a dropped operand is None on purpose: the rule must name it
        return ops.qmatmul_gptq(x, qweight, scales, qzeros, g_idx, **params)  # type: ignore[arg-type]


def test_shape_rule__infers_m_by_n_in_x_dtype() -> None:
    y = _build(_types(x_dtype=DType.bfloat16))
    assert y.type == TensorType(DType.bfloat16, ["m", N], CPU)


@pytest.mark.parametrize(
    ("types", "drop", "overrides", "message"),
    [
        (_types(), (), {"bits": 5}, r"fg.qmatmul.gptq: bits must be one of 2, 3, 4, 8, got 5"),
        (_types(qweight_rows=8), (), {}, r"fg.qmatmul.gptq: qweight dim 0 \(8\) != K\*bits/32 \(16\)"),
        (_types(groups=2), (), {}, r"fg.qmatmul.gptq: scales dim 0 \(2\) != G \(4\)"),
        (
            _types(),
            (),
            {"group_size": 48},
            r"group_size \(48\) must be -1 or a positive divisor of K \(128\)",
        ),
        (_types(), (), {"group_size": 0}, r"group_size \(0\) must be -1 or a positive divisor of K \(128\)"),
        (_types(), ("g_idx",), {}, r"fg.qmatmul.gptq: desc_act=True requires g_idx"),
        (
            _types(),
            ("qzeros",),
            {},
            r"fg.qmatmul.gptq: qzeros may be absent only when sym=True \(got sym=False\)",
        ),
        (
            _types(k=80, bits=3, groups=1),
            (),
            {"bits": 3, "group_size": -1},
            r"K \(80\) must be a multiple of 32 for bits=3",
        ),
        (
            _types(x_dtype=DType.int32),
            (),
            {},
            r"fg.qmatmul.gptq: x dtype must be one of float32, float16, bfloat16, got int32",
        ),
        (
            _types(scale_dtype=DType.int8),
            (),
            {},
            r"fg.qmatmul.gptq: scales dtype must be one of .*, got int8",
        ),
        (
            _types(),
            (),
            {"zero_format": "v3"},
            r"fg.qmatmul.gptq: zero_format must be one of v1, v2, got 'v3'",
        ),
        (_types(), (), {"clip": -1.0}, r"fg.qmatmul.gptq: clip must be > 0, got -1.0"),
    ],
)
def test_shape_rule_errors_name_op_operand_and_values(types, drop, overrides, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        _build(types, drop, **overrides)
    assert re.search(r"test_gptq.py:\d+", str(err.value)), "error must point at the user's line"


def test_shape_rule__mismatched_optional_operands() -> None:
    types = _types()
    types["qzeros"] = TensorType(DType.int32, [4, 8], CPU)
    with pytest.raises(ValueError, match=r"qzeros dim 1 \(8\) != N\*bits/32 \(4\)"):
        _build(types)
    types = _types()
    types["g_idx"] = TensorType(DType.int32, [64], CPU)
    with pytest.raises(ValueError, match=r"g_idx dim 0 \(64\) != K \(128\)"):
        _build(types)
    types = _types()
    types["qweight"] = TensorType(DType.int32, [16, 64], CPU)
    with pytest.raises(ValueError, match=r"scales dim 1 \(32\) != N \(64\)"):
        _build(types)
    types = _types()
    types["x"] = TensorType(DType.float32, ["m", "k"], CPU)
    with pytest.raises(ValueError, match=r"x dim 1 must be static, got k"):
        _build(types)


def test_parsed_ir_keeps_optional_operands_apart_and_is_verified() -> None:
    with Graph("g", input_types=list(_types().values())) as g:
        x, qweight, scales, _, g_idx = g.inputs
        g.output(
            ops.qmatmul_gptq(x, qweight, scales, None, g_idx, bits=4, group_size=32, sym=True, desc_act=True)
        )
    text = str(g)
    assert " g_idx %" in text and " zeros %" not in text
    op = next(o for o in parse(text).block.ops if isinstance(o, QMatmulGptqOp))
    assert op.qzeros is None and op.g_idx is not None and (op.bits, op.sym, op.clip) == (4, True, None)
    with pytest.raises(IRVerifyError, match=r"fg.qmatmul.gptq: bits must be one of 2, 3, 4, 8, got 5"):
        parse(text.replace("bits = 4", "bits = 5")).verify()


def test_decomposition_runs_on_iree_with_dynamic_m() -> None:
    pytest.importorskip("iree.compiler")
    pytest.importorskip("torch_mlir")
    t, _, _, w_dense = _ref_case(3, False, True, "v1", 32)
    with Graph("gptq_iree", input_types=[TensorType(DType.float32, ["total_seq_len", K], CPU)]) as g:
        (x,) = g.inputs
        w = {
            n: g.add_weight(n, TensorType(DType.from_torch(v.dtype), list(v.shape), CPU))
            for n, v in t.items()
        }
        g.output(ops.qmatmul_gptq(x, *w.values(), bits=3, group_size=32, sym=False, desc_act=True, clip=0.3))
    model = fusegraph.compile(g, backend="iree", device="cpu", weights=t)
    for rows in (1, 6):
        xs = torch.randn(rows, K)
        (y,) = model(xs)
        _assert_close(y, xs @ w_dense.clamp(-0.3, 0.3))
