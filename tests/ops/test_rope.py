"""fg.rope: shape rules and numerics against the rotation formula."""

from __future__ import annotations

import pytest
import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.ops.rope import RopeVariant
from tests.ops.paged_reference import Mode, freqs_table, only_op, rope_reference, u32

CPU = DeviceRef.CPU()
F32, U32 = DType.float32, DType.uint32


def _types(
    d: int = 8, freqs_d: int | None = None, ro_dtype: DType = U32, x_rank: int = 3
) -> list[TensorType]:
    dims: list[int | str] = ["total_seq_len", 2, d, 1]
    x_shape = dims[:x_rank] if x_rank <= 3 else dims
    return [
        TensorType(F32, x_shape, CPU),
        TensorType(ro_dtype, ["batch_plus_1"], CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(F32, [64, freqs_d if freqs_d is not None else d], CPU),
    ]


def _build(interleaved: bool, **kw) -> Graph:
    with Graph("rope", input_types=_types(**kw)) as g:
        x, ro, sp, freqs = g.inputs
        g.output(ops.rope(x, ro, sp, freqs, interleaved=interleaved))
    return g


# --- shape rules ------------------------------------------------------------------------
def test_rope__result_type_is_x_type() -> None:
    g = _build(False)
    assert g.outputs[0].type == _types()[0]
    g.verify()


def test_rope__refuses_odd_head_dim() -> None:
    with pytest.raises(ValueError, match=r"fg.rope: head dim must be even, got d=7 \(at .*test_rope.py"):
        _build(True, d=7, freqs_d=7)


def test_rope__refuses_freqs_wider_than_the_head_or_odd() -> None:
    with pytest.raises(
        ValueError,
        match=r"fg.rope: freqs_cis dim 1 \(the rotary width, 16\) must be even and in \[2, head dim \(8\)\]",
    ):
        _build(True, freqs_d=16)
    with pytest.raises(ValueError, match=r"rotary width, 5\) must be even"):
        _build(True, freqs_d=5)


def test_rope__refuses_non_uint32_row_offsets() -> None:
    with pytest.raises(ValueError, match="fg.rope: input_row_offsets dtype must be one of uint32, got int64"):
        _build(True, ro_dtype=DType.int64)


def test_rope__refuses_x_of_rank_2() -> None:
    with pytest.raises(ValueError, match=r"fg.rope: x must have rank 3, got shape \[total_seq_len, 2\]"):
        _build(True, x_rank=2)


def test_rope__refuses_static_row_offsets_that_do_not_match_batch() -> None:
    types = _types()
    types[1], types[2] = TensorType(U32, [4], CPU), TensorType(U32, [2], CPU)
    with Graph("rope", input_types=types) as g:
        x, ro, sp, freqs = g.inputs
        with pytest.raises(ValueError, match=r"input_row_offsets dim 0 \(4\) != start_pos dim 0 \+ 1 \(3\)"):
            ops.rope(x, ro, sp, freqs, interleaved=False)


# --- numerics ---------------------------------------------------------------------------
def _run(g: Graph, *tensors: torch.Tensor, mode: Mode) -> torch.Tensor:
    op = only_op(g, "fg.rope")
    return get_torch_impl(op)(op, *tensors, ctx=LoweringContext(mode=mode))


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
@pytest.mark.parametrize("interleaved", [True, False])
def test_rope__matches_rotation_formula_on_ragged_batch(interleaved: bool, mode: Mode) -> None:
    torch.manual_seed(0)
    cache_lengths, tokens, d = [0, 5, 40], [3, 1, 6], 8
    x = torch.randn(sum(tokens), 2, d)
    positions = [c + i for c, n in zip(cache_lengths, tokens) for i in range(n)]
    offsets = [0, 3, 4, 10]
    got = _run(_build(interleaved), x, u32(offsets), u32(cache_lengths), freqs_table(64, d), mode=mode)
    want = rope_reference(x, positions, interleaved=interleaved)
    torch.testing.assert_close(got.to(torch.float64), want, rtol=1e-5, atol=1e-5)


def test_rope__interleaved_and_halves_pairings_differ() -> None:
    torch.manual_seed(1)
    x, ro, sp, f = torch.randn(2, 2, 8), u32([0, 2]), u32([3]), freqs_table(64, 8)
    a = _run(_build(True), x, ro, sp, f, mode="custom")
    b = _run(_build(False), x, ro, sp, f, mode="custom")
    assert not torch.allclose(a, b)


def test_rope__bf16_within_tolerance() -> None:
    torch.manual_seed(2)
    x = torch.randn(5, 2, 8).to(torch.bfloat16)
    got = torch.ops.fusegraph.rope(x, u32([0, 5]), u32([7]), freqs_table(64, 8), False)
    assert got.dtype == torch.bfloat16
    want = rope_reference(x, list(range(7, 12)), interleaved=False)
    torch.testing.assert_close(got.to(torch.float64), want, rtol=2e-2, atol=2e-2)


def test_rope__custom_op_passes_opcheck() -> None:
    args = (torch.randn(4, 2, 8), u32([0, 1, 4]), u32([2, 0]), freqs_table(16, 8), True)
    torch.library.opcheck(torch.ops.fusegraph.rope.default, args)


@pytest.mark.parametrize(
    "variant",
    [RopeVariant(long_after=12), RopeVariant(ntk=(500.0, 2.5, 16))],
    ids=["longrope", "dynamic-ntk"],
)
def test_rope__length_scaling_properties_print_and_parse_back(variant) -> None:
    from fusegraph.dialect import parse
    from fusegraph.ops.rope import RopeOp

    with Graph("rope", input_types=_types(d=8, freqs_d=4)) as g:
        x, ro, sp, freqs = g.inputs
        g.output(ops.rope(x, ro, sp, freqs, interleaved=False, variant=variant))
    text = str(g)
    assert ("long_after = 12" in text) == (variant.long_after is not None)
    assert ("ntk_original_max = 16" in text) == (variant.ntk is not None)
    (op,) = [o for o in parse(text, "rope.mlir").module.walk() if isinstance(o, RopeOp)]
    assert op.variant == variant


def _rope_with(freqs_type: TensorType, variant: RopeVariant) -> None:
    with Graph("rope", input_types=[*_types()[:3], freqs_type]) as g:
        x, ro, sp, freqs = g.inputs
        ops.rope(x, ro, sp, freqs, interleaved=False, variant=variant)


def test_rope__refuses_an_odd_stacked_longrope_table_and_a_narrow_dynamic_one() -> None:
    match = r"with long_after, freqs_cis stacks two tables: dim 0 \(63\) must be even"
    with pytest.raises(ValueError, match=match):
        _rope_with(TensorType(F32, [63, 8], CPU), RopeVariant(long_after=4))
    with pytest.raises(ValueError, match=r"dynamic NTK needs a rotary width >= 4"):
        _rope_with(TensorType(F32, [64, 2], CPU), RopeVariant(ntk=(1e4, 2.0, 8)))
