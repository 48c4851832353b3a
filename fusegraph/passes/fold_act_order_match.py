"""Matching for `fold-act-order-permutation`: who produces an act-order matmul's input, guard by guard.

`match_fold(op)` looks at an `fg.qmatmul.gptq_tiled` that permutes its input (`perm %p`)
without touching anything and returns an `MlpFold` (x is `silu(a) * b` of GPTQ projections),
a `NormFold` (x is an `fg.rms_norm`), an `AttentionFold` (x is `reshape(fg.attention.paged)`,
o_proj's input) or the first reason it failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.effects import writes_buffer
from fusegraph.compiler.types import tensor_type
from fusegraph.ops.attention import PagedAttentionOp
from fusegraph.ops.elementwise import AddOp, MulOp, SiluOp
from fusegraph.ops.gptq_repack import GptqRepackOp, QMatmulGptqTiledOp
from fusegraph.ops.norm import RmsNormOp
from fusegraph.ops.shape import ReshapeOp, SplitOp
from fusegraph.passes.patterns import NoMatch, NotCandidate, block_index, defined_by, no_match, num_uses


@dataclass
class Projection:
    """A GPTQ projection whose output columns get permuted: `G = x @ W (+ bias)`."""

    matmul: QMatmulGptqTiledOp
    repack: GptqRepackOp
    bias: AddOp | None  # `G + bias` (bias `[N]`), the value the MLP reads; None: G itself

    @property
    def out(self) -> SSAValue:
        return (self.bias or self.matmul).results[0]

    @property
    def bias_value(self) -> SSAValue | None:
        if self.bias is None:
            return None
        lhs, rhs = self.bias.operands
        return rhs if lhs is self.matmul.result else lhs


@dataclass
class MlpFold:
    """`down(silu(a) * b)`: a, b the halves of one stacked projection (`split`) or two projections."""

    down: QMatmulGptqTiledOp
    mul: MulOp
    silu: SiluOp
    gate_first: bool  # mul's lhs is the silu
    split: SplitOp | None  # stacked gate_up: `a, b = split(G)`; None: separate gate, up
    projections: list[Projection]  # [G] (stacked) or [gate, up]


@dataclass
class NormFold:
    """`x = fg.rms_norm(h, w)` feeding the matmul: the norm can emit x permuted."""

    matmul: QMatmulGptqTiledOp
    norm: RmsNormOp
    perm: SSAValue


@dataclass
class AttentionFold:
    """`x = reshape(fg.attention.paged(q, ...))` `[T, H, D] -> [T, H·D]` feeding the matmul (o_proj): the
    attention can store its output columns permuted."""

    matmul: QMatmulGptqTiledOp
    reshape: ReshapeOp
    attention: PagedAttentionOp
    perm: SSAValue


def match_fold(op: QMatmulGptqTiledOp) -> MlpFold | NormFold | AttentionFold | NoMatch:
    """The fold of `op`'s input permutation into its producer, or why there is none."""
    if op.perm is None:
        return NotCandidate("the matmul does not permute x")
    owner = op.x.owner
    if isinstance(owner, RmsNormOp):
        if owner.perm is not None:
            return no_match("x is an fg.rms_norm that already permutes its result")
        return NormFold(op, owner, op.perm)
    if isinstance(owner, MulOp):
        return _match_mlp(op, owner)
    if isinstance(owner, ReshapeOp) and isinstance(owner.input.owner, PagedAttentionOp):
        return _match_attention(op, owner, owner.input.owner)
    what = owner.name if isinstance(owner, Operation) else "a graph input"
    return no_match(
        f"x is produced by {what}, not by silu(gate) * up of GPTQ projections, fg.rms_norm or "
        "reshape(fg.attention.paged): the permutation of x stays at run time"
    )


def _match_attention(
    op: QMatmulGptqTiledOp, reshape: ReshapeOp, attention: PagedAttentionOp
) -> AttentionFold | NoMatch:
    assert op.perm is not None  # match_fold checked it
    if attention.perm is not None:
        return no_match("x is an fg.attention.paged that already permutes its result")
    if num_uses(reshape.result) != 1 or num_uses(attention.result) != 1:
        return no_match("the attention's output has other users (they need its columns unpermuted)")
    q, x = tensor_type(attention.q), tensor_type(reshape.result)
    heads, dim = q.shape[1], q.shape[2]
    if (
        not (heads.is_static and dim.is_static)
        or x.rank != 2
        or x.shape != (q.shape[0], Dim(heads.value * dim.value))
    ):
        return no_match(f"the reshape of the attention's {q.shape} output is not [T, heads x head dim]")
    between = op.parent_block()
    assert between is not None
    lo, hi = block_index(attention), block_index(op)
    if any(writes_buffer(o) for o in list(between.ops)[lo + 1 : hi]):
        return no_match(
            "a buffer is written between the attention and the matmul (the attention cannot move)"
        )
    return AttentionFold(op, reshape, attention, op.perm)


def _match_mlp(down: QMatmulGptqTiledOp, mul: MulOp) -> MlpFold | NoMatch:
    if num_uses(mul.result) != 1:
        return no_match(
            f"silu(gate) * up has {num_uses(mul.result)} users (its columns are needed unpermuted)"
        )
    lhs, rhs = mul.lhs, mul.rhs
    gate_first = isinstance(lhs.owner, SiluOp)
    silu_value, up = (lhs, rhs) if gate_first else (rhs, lhs)
    if not isinstance(silu := silu_value.owner, SiluOp):
        return no_match("neither operand of the fg.mul is an fg.silu")
    if num_uses(silu.result) != 1:
        return no_match(f"the fg.silu has {num_uses(silu.result)} users")
    gate = silu.input
    if tensor_type(gate) != tensor_type(up) or tensor_type(gate).rank != 2:
        return no_match("gate and up differ in type or are not [M, I]")
    k = tensor_type(down.x).shape[1].value
    if gate.owner is up.owner and isinstance(split := gate.owner, SplitOp):
        return _match_stacked(down, mul, silu, gate_first, split, k)
    projections = []
    for what, value in (("gate", gate), ("up", up)):
        if num_uses(value) != 1:
            return no_match(f"{what} has {num_uses(value)} users")
        if isinstance(proj := _projection(value, what, k), NoMatch):
            return proj
        projections.append(proj)
    if projections[0].matmul is projections[1].matmul:
        return no_match("gate and up are the same projection")
    return MlpFold(down, mul, silu, gate_first, None, projections)


def _match_stacked(
    down: QMatmulGptqTiledOp, mul: MulOp, silu: SiluOp, gate_first: bool, split: SplitOp, k: int
) -> MlpFold | NoMatch:
    if len(split.outputs) != 2 or split.axis.value.data != 1:
        return no_match("gate and up come from a split that is not two pieces along axis 1")
    if any(num_uses(r) != 1 for r in split.outputs):
        return no_match("a half of the gate_up split has another user")
    if isinstance(proj := _projection(split.input, "the split gate_up", 2 * k), NoMatch):
        return proj
    if num_uses(proj.out) != 1:
        return no_match(f"the gate_up projection has {num_uses(proj.out)} users")
    return MlpFold(down, mul, silu, gate_first, split, [proj])


def _projection(value: SSAValue, what: str, n: int) -> Projection | NoMatch:
    """`value` = `G (+ bias)` for a tiled GPTQ matmul G with N = n columns from a repack."""
    bias = value.owner if isinstance(value.owner, AddOp) else None
    if bias is not None:
        lhs, rhs = bias.operands
        value = lhs if isinstance(lhs.owner, QMatmulGptqTiledOp) else rhs
        b = tensor_type(rhs if value is lhs else lhs)
        if b.rank != 1 or b.shape[0] != Dim(n):
            return no_match(f"{what} adds something other than a [{n}] bias to the projection")
    if isinstance(matmul := defined_by(value, QMatmulGptqTiledOp, what), NoMatch):
        return matmul
    if num_uses(matmul.result) != 1:
        return no_match(f"the {what} projection has {num_uses(matmul.result)} users")
    if tensor_type(matmul.result).shape[1].value != n:
        return no_match(
            f"the {what} projection has {tensor_type(matmul.result).shape[1]} columns, expected {n}"
        )
    if isinstance(repack := defined_by(matmul.qweight_t, GptqRepackOp, f"{what}'s qweight_t"), NoMatch):
        return repack
    if matmul.qzeros_t is not repack.qzeros_t:
        return no_match(f"{what}'s qzeros_t and qweight_t come from different repacks")
    return Projection(matmul, repack, bias)
