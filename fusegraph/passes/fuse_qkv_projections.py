"""`fuse-qkv-projections`: three projections of one input  ==>  one stacked projection + split.

Matched forms (all three projections in the same form, anchored at the last of them):
  * `x @ W.T` as `Linear` builds it: `fg.matmul %x, (fg.permute %W {perm = [1, 0]})` with
    W `[N, K]`. The weights are stacked along N before the transpose.
  * `x @ W` with W `[K, N]`: the weights are concatenated along their last axis.
  * `fg.qmatmul.gptq %x, %qweight, %scales [zeros %qzeros] [g_idx %g_idx]` with equal
    bits/group_size/sym/desc_act/zero_format/clip: qweight, scales and qzeros are
    concatenated along N (each is packed along K or per column-word, so columns stack),
    and g_idx must be the same value or absent (as `GPTQLinear` emits it without desc_act)
    for all three. Matching lives in `qkv_match.py`.

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

from fusegraph.compiler.types import TensorType, tensor_type
from fusegraph.ops.gptq import QMatmulGptqOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.ops.shape import ConcatOp, PermuteOp, SplitOp
from fusegraph.passes.patterns import GuardedPattern, NoMatch, apply_patterns, current_report
from fusegraph.passes.qkv_match import GptqMatch, MatmulMatch, match_projections


def concat(values: list[SSAValue], axis: int) -> ConcatOp:
    """A detached `fg.concat` of `values` along `axis` (type computed here)."""
    first = tensor_type(values[0])
    shape = list(first.shape)
    for v in values[1:]:
        shape[axis] = shape[axis] + tensor_type(v).shape[axis]
    out = TensorType(first.dtype, shape, first.device)
    return ConcatOp.build(operands=[values], properties={"axis": IntegerAttr(axis, i64)}, result_types=[out])


class FuseProjections(GuardedPattern[MatmulMatch | GptqMatch]):
    """q, k, v projections of one input -> one stacked projection + fg.split"""

    counter = "fused"

    def match(self, op: MatmulOp | QMatmulGptqOp) -> MatmulMatch | GptqMatch | NoMatch:
        return match_projections(op)

    def rewrite(self, match: MatmulMatch | GptqMatch, rewriter: PatternRewriter) -> None:
        group: list[MatmulOp] | list[QMatmulGptqOp] = match.group
        new_ops = _stacked_matmul(match) if isinstance(match, MatmulMatch) else _stacked_gptq(match.group)
        outs = [p.result for p in group]
        split = SplitOp.build(
            operands=[new_ops[-1].results[0]],
            properties={"axis": IntegerAttr(tensor_type(outs[0]).rank - 1, i64)},
            result_types=[[o.type for o in outs]],
        )
        rewriter.insert([*new_ops, split], InsertPoint.before(group[-1]))
        for old, new in zip(outs, split.results, strict=True):
            rewriter.replace_all_uses_with(old, new)
        for proj in group:
            rhs_owner = proj.operands[1].owner
            rewriter.erase(proj)
            if isinstance(rhs_owner, PermuteOp) and rhs_owner.result.first_use is None:
                rewriter.erase(rhs_owner)


def _stacked_matmul(match: MatmulMatch) -> list[Operation]:
    x = match.group[0].lhs
    rhs = [p.rhs for p in match.group]
    if not match.transposed:
        w = concat(rhs, axis=1)
        return [w, MatmulOp.build(operands=[x, w.result], result_types=[_out_type(x, w.result, 1)])]
    # the guards checked that every rhs is a [1, 0] permute
    w = concat([r.owner.input for r in rhs if isinstance(r.owner, PermuteOp)], axis=0)
    w_type = tensor_type(w.result)
    wt_type = TensorType(w_type.dtype, list(reversed(w_type.shape)), w_type.device)
    perm = {"perm": DenseArrayBase.from_list(i64, [1, 0])}
    wt = PermuteOp.build(operands=[w.result], properties=perm, result_types=[wt_type])
    return [w, wt, MatmulOp.build(operands=[x, wt.result], result_types=[_out_type(x, wt.result, 1)])]


def _stacked_gptq(group: list[QMatmulGptqOp]) -> list[Operation]:
    first = group[0]
    qweight = concat([p.qweight for p in group], axis=1)
    scales = concat([p.scales for p in group], axis=1)
    new_ops: list[Operation] = [qweight, scales]
    qzeros: list[SSAValue] = []
    if first.qzeros is not None:
        # the guards checked that qzeros presence agrees
        new_ops.append(zeros := concat([p.qzeros for p in group if p.qzeros is not None], axis=1))
        qzeros = [zeros.result]
    g_idx = [] if first.g_idx is None else [first.g_idx]
    mm = QMatmulGptqOp.build(
        operands=[first.x, qweight.result, scales.result, qzeros, g_idx],
        properties=dict(first.properties),
        result_types=[_out_type(first.x, scales.result, 1)],
    )
    return [*new_ops, mm]


def _out_type(x: SSAValue, w: SSAValue, n_axis: int) -> TensorType:
    xt = tensor_type(x)
    return TensorType(xt.dtype, [*xt.shape[:-1], tensor_type(w).shape[n_axis]], xt.device)


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
