"""`fuse-qkv-projections`: three projections of one input  ==>  one stacked projection + split.

Matched forms (all three projections in the same form, anchored at the last of them):
  * `x @ W.T` as `Linear` builds it: `fg.matmul %x, (fg.permute %W {perm = [1, 0]})` with
    W `[N, K]`. The weights are stacked along N before the transpose.
  * `x @ W` with W `[K, N]`: the weights are concatenated along their last axis.
  * `fg.qmatmul.gptq %x, %qweight, %scales [zeros %qzeros] [g_idx %g_idx]` with equal
    bits/group_size/sym/desc_act/zero_format/clip: qweight, scales and qzeros are
    concatenated along N (each is packed along K or per column-word, so columns stack),
    and g_idx must be the same value (or absent) for all three.

Before:
    %wq_t = fg.permute %wq {perm = array<i64: 1, 0>}   (same for wk, wv)
    %q = fg.matmul %x, %wq_t    %k = fg.matmul %x, %wk_t    %v = fg.matmul %x, %wv_t
After:
    %w = fg.concat %wq, %wk, %wv {axis = 0}    %w_t = fg.permute %w {perm = array<i64: 1, 0>}
    %qkv = fg.matmul %x, %w_t
    %q, %k, %v = fg.split %qkv {axis = 1}

Each output element is the same dot product as before; only the matmul's blocking changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.compiler.types import TensorType
from fusegraph.ops.gptq import QMatmulGptqOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.ops.shape import ConcatOp, PermuteOp, SplitOp
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    NotCandidate,
    apply_patterns,
    block_index,
    current_report,
    no_match,
    users,
)

_GPTQ_CONFIG = ("bits", "group_size", "sym", "desc_act", "zero_format", "clip")


def concat(values: list[SSAValue], axis: int) -> ConcatOp:
    """A detached `fg.concat` of `values` along `axis` (type computed here)."""
    first: TensorType = values[0].type  # type: ignore[assignment]
    shape = list(first.shape)
    for v in values[1:]:
        shape[axis] = shape[axis] + v.type.shape[axis]  # type: ignore[attr-defined]
    out = TensorType(first.dtype, shape, first.device)
    return ConcatOp.build(operands=[values], properties={"axis": IntegerAttr(axis, i64)}, result_types=[out])


def _group(op: MatmulOp | QMatmulGptqOp) -> list[Operation] | NoMatch:
    x = op.operands[0]
    group = sorted((u for u in users(x) if type(u) is type(op) and u.operands[0] is x), key=block_index)
    if len(group) == 1:
        return NotCandidate(f"the only {op.name} user of its input")
    if len(group) != 3:
        return no_match(f"input has {len(group)} {op.name} users, expected 3 (q, k, v)")
    if group[-1] is not op:
        return NotCandidate("not the last of the 3 projections of its input (matched there)")
    last = block_index(op)
    for i, proj in enumerate(group[:-1]):
        if any(block_index(u) < last for u in users(proj.results[0])):
            return no_match(f"projection {i} is used before the last projection")
    return group


def _matmul_layout(group: list[Operation]) -> bool | NoMatch:
    """True: weights are `W.T` permutes of `[N, K]`; False: plain `[K, N]`."""
    transposed = [isinstance(m.operands[1].owner, PermuteOp) for m in group]
    if len(set(transposed)) != 1:
        return no_match("projections disagree on the weight layout (W.T vs W)")
    for i, m in enumerate(group):
        if m.operands[1].type.rank != 2:
            return no_match(f"projection {i} has a batched rhs")
        if transposed[0] and list(m.operands[1].owner.permutation) != [1, 0]:
            return no_match(f"projection {i} weight permute is not [1, 0]")
    return transposed[0]


def _gptq_agree(group: list[Operation]) -> NoMatch | None:
    first = group[0]
    for i, op in enumerate(group[1:], start=1):
        for field in _GPTQ_CONFIG:
            if getattr(op, field) != getattr(first, field):
                return no_match(f"projection {i} {field} {getattr(op, field)} != {getattr(first, field)}")
        if (op.qzeros is None) != (first.qzeros is None):
            return no_match(f"projection {i} qzeros presence differs")
        if op.g_idx is not first.g_idx:
            return no_match(f"projection {i} g_idx is a different value (weights are unknown here)")
        if op.scales.type.dtype != first.scales.type.dtype:
            return no_match(f"projection {i} scales dtype differs")
    return None


@dataclass
class _Match:
    group: list[Operation]
    transposed: bool | None  # None: GPTQ


class FuseProjections(GuardedPattern[_Match]):
    """q, k, v projections of one input -> one stacked projection + fg.split"""

    counter = "fused"

    def match(self, op: MatmulOp | QMatmulGptqOp) -> _Match | NoMatch:
        if isinstance(group := _group(op), NoMatch):
            return group
        if isinstance(op, QMatmulGptqOp):
            reason = _gptq_agree(group)
            return reason if reason is not None else _Match(group, None)
        layout = _matmul_layout(group)
        return layout if isinstance(layout, NoMatch) else _Match(group, layout)

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        new_ops = _stacked_gptq(match.group) if match.transposed is None else _stacked_matmul(match)
        outs = [p.results[0] for p in match.group]
        rank = outs[0].type.rank  # type: ignore[attr-defined]
        split = SplitOp.build(
            operands=[new_ops[-1].results[0]],
            properties={"axis": IntegerAttr(rank - 1, i64)},
            result_types=[[o.type for o in outs]],
        )
        rewriter.insert([*new_ops, split], InsertPoint.before(match.group[-1]))
        for old, new in zip(outs, split.results, strict=True):
            rewriter.replace_all_uses_with(old, new)
        for proj in match.group:
            rhs_owner = proj.operands[1].owner
            rewriter.erase(proj)
            if isinstance(rhs_owner, PermuteOp) and rhs_owner.result.first_use is None:
                rewriter.erase(rhs_owner)


def _stacked_matmul(match: _Match) -> list[Operation]:
    x = match.group[0].operands[0]
    rhs = [p.operands[1] for p in match.group]
    if not match.transposed:
        w = concat(rhs, axis=1)
        return [w, MatmulOp.build(operands=[x, w.result], result_types=[_out_type(x, w.result, 1)])]
    w = concat([r.owner.input for r in rhs], axis=0)  # type: ignore[union-attr]
    wt_type = TensorType(w.result.type.dtype, list(reversed(w.result.type.shape)), w.result.type.device)
    perm = {"perm": DenseArrayBase.from_list(i64, [1, 0])}
    wt = PermuteOp.build(operands=[w.result], properties=perm, result_types=[wt_type])
    return [w, wt, MatmulOp.build(operands=[x, wt.result], result_types=[_out_type(x, wt.result, 1)])]


def _stacked_gptq(group: list[Operation]) -> list[Operation]:
    first: QMatmulGptqOp = group[0]  # type: ignore[assignment]
    qweight = concat([p.qweight for p in group], axis=1)  # type: ignore[attr-defined]
    scales = concat([p.scales for p in group], axis=1)  # type: ignore[attr-defined]
    new_ops: list[Operation] = [qweight, scales]
    qzeros: list[SSAValue] = []
    if first.qzeros is not None:
        new_ops.append(zeros := concat([p.qzeros for p in group], axis=1))  # type: ignore[attr-defined]
        qzeros = [zeros.result]
    g_idx = [] if first.g_idx is None else [first.g_idx]
    mm = QMatmulGptqOp.build(
        operands=[first.x, qweight.result, scales.result, qzeros, g_idx],
        properties=dict(first.properties),
        result_types=[_out_type(first.x, scales.result, 1)],
    )
    return [*new_ops, mm]


def _out_type(x: SSAValue, w: SSAValue, n_axis: int) -> TensorType:
    xt: TensorType = x.type  # type: ignore[assignment]
    return TensorType(xt.dtype, [*xt.shape[:-1], w.type.shape[n_axis]], xt.device)  # type: ignore[attr-defined]


class _FuseMatmuls(FuseProjections):
    anchor = MatmulOp


class _FuseGptq(FuseProjections):
    anchor = QMatmulGptqOp


@dataclass(frozen=True)
class FuseQKVProjections(ModulePass):
    """Stack the q/k/v projections (fg.matmul or fg.qmatmul.gptq) of one input into one."""

    name = "fuse-qkv-projections"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "skipped")
        apply_patterns(op, [_FuseMatmuls(report), _FuseGptq(report)])
