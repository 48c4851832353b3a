"""`fg.gptq.permute_columns`: its shape rule's errors, and the permuted GPTQ tensors dequantize to the
permuted dense weight (checked against `dequantize` of the checkpoint and a column gather)."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.ops.gptq_packing import dequantize, pack
from fusegraph.ops.gptq_permute import GptqPermuteColumnsOp, permute_columns

CPU = DeviceRef.CPU()
I32 = DType.int32


def _t(*shape: int | str, dtype: DType = I32, device: DeviceRef = CPU) -> TensorType:
    return TensorType(dtype, list(shape), device)


@pytest.mark.parametrize(
    ("bits", "parts", "sym"), [(4, 2, False), (4, 1, True), (8, 2, False), (3, 2, False), (2, 1, False)]
)
def test_permute_columns__permuted_tensors_dequantize_to_the_permuted_weight(
    bits: int, parts: int, sym: bool
):
    p, k = 64, 128
    gen = torch.Generator().manual_seed(bits * 10 + parts)
    t = pack(torch.randn(parts * p, k, generator=gen), bits=bits, group_size=32, sym=sym, desc_act=True,
             perm=torch.randperm(k, generator=gen))  # fmt: skip
    perm = torch.randperm(p, generator=gen).to(torch.int32)
    qw = permute_columns(t["qweight"], perm, parts=parts)
    qz = permute_columns(t["qzeros"], perm, parts=parts, packed_bits=bits)
    scales = permute_columns(t["scales"], perm, parts=parts)
    assert qw.dtype == qz.dtype == torch.int32 and qz.shape == t["qzeros"].shape and qz.is_contiguous()
    kw = dict(bits=bits, group_size=32, sym=sym)
    w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], **kw)  # type: ignore[arg-type]
    columns = torch.cat([j * p + perm.long() for j in range(parts)])  # block j's column i <- j*P + perm[i]
    got = dequantize(qw, scales, qz, t["g_idx"], **kw)  # type: ignore[arg-type]
    assert torch.equal(got, w[:, columns])


def test_permute_columns__a_bias_and_the_graph_op_gather_within_each_block():
    bias = torch.arange(8, dtype=torch.float32)
    perm = torch.tensor([2, 0, 3, 1], dtype=torch.int32)
    with Graph("permute", input_types=[_t(8, dtype=DType.float32), _t(4)]) as g:
        g.output(ops.gptq_permute_columns(g.inputs[0], g.inputs[1], parts=2))
    (got,) = fusegraph.compile(g, pipeline=None)(bias, perm)
    assert got.tolist() == [2.0, 0.0, 3.0, 1.0, 6.0, 4.0, 7.0, 5.0]


@pytest.mark.parametrize(
    ("perm", "message"),
    [([1, 4, 0, 2], r"got perm\[1\] = 4"), ([1, 0, 1, 2], r"got perm\[0\] = perm\[2\] = 1")],
)
def test_permute_columns__refuses_a_perm_that_is_not_a_permutation(perm, message):
    with pytest.raises(
        ValueError, match=r"fg.gptq.permute_columns: perm must be a permutation of 0..3, " + message
    ):
        permute_columns(torch.zeros(2, 8), torch.tensor(perm, dtype=torch.int32), parts=2)


@pytest.mark.parametrize(
    ("t", "perm", "parts", "packed_bits", "message"),
    [
        (_t(2, 2, 8), _t(8), 1, 0, "fg.gptq.permute_columns: input must have rank 1 or 2, got 3"),
        (_t(2, 8), _t(8, dtype=DType.int64), 1, 0, "perm dtype must be one of int32, got int64"),
        (_t(2, 8), _t(2, 4), 1, 0, r"perm must have rank 1, got shape \[2, 4\]"),
        (_t(2, 8), _t(8), 0, 0, "parts must be an int >= 1, got 0"),
        (_t(2, 8), _t(8), 1, 5, "packed_bits must be one of 0, 2, 3, 4, 8, got 5"),
        (_t(2, 8, dtype=DType.float16), _t(16), 1, 4, "input dtype must be one of int32, got float16"),
        (_t(8), _t(64), 1, 4, r"input must have rank 2, got shape \[8\]"),
        (_t(2, 4), _t(16), 1, 3, r"input dim -1 \(4\) is not whole 3-word blocks of 3-bit values"),
        (_t(2, "n"), _t(8), 1, 0, r"input's last dim \(n\) and perm dim 0 \(8\) must be static"),
        (_t(2, 8), _t(8), 2, 0, r"input dim -1 \(8\) != parts \(2\) \* perm dim 0 \(8\)"),
        (
            _t(2, 8),
            _t(16),
            2,
            4,
            r"input dim -1 \(8 words = 64 columns\) != parts \(2\) \* perm dim 0 \(16\)",
        ),
        (
            _t(2, 8),
            _t(8, device=DeviceRef.GPU(0)),
            1,
            0,
            "operands on different devices: input on cpu, perm on gpu:0",
        ),
    ],  # fmt: skip
)
def test_permute_columns__shape_rule_names_the_operand_and_dims(t, perm, parts, packed_bits, message):
    with pytest.raises(ValueError, match=message):
        GptqPermuteColumnsOp.rule(t, perm, parts=parts, packed_bits=packed_bits)


def test_permute_columns__the_rule_keeps_the_input_type():
    t = _t("g", 64)
    assert GptqPermuteColumnsOp.rule(_t(4, 8), _t(32), parts=2, packed_bits=4) == [_t(4, 8)]  # 64 columns
    assert GptqPermuteColumnsOp.rule(t, _t(64), parts=1, packed_bits=0) == [t]
