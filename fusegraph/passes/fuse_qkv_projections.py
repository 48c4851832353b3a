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
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.compiler.types import tensor_type
from fusegraph.ops.gptq import QMatmulGptqOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.ops.shape import ConcatOp, PermuteOp, SplitOp
from fusegraph.passes.patterns import GuardedPattern, NoMatch, apply_patterns, current_report
from fusegraph.passes.qkv_match import GptqMatch, MatmulMatch, match_projections


class FuseProjections(GuardedPattern[MatmulMatch | GptqMatch]):
    """q, k, v projections of one input -> one stacked projection + fg.split"""

    counter = "fused"

    def match(self, op: MatmulOp | QMatmulGptqOp) -> MatmulMatch | GptqMatch | NoMatch:
        return match_projections(op)

    def rewrite(self, match: MatmulMatch | GptqMatch, rewriter: PatternRewriter) -> None:
        group: list[MatmulOp] | list[QMatmulGptqOp] = match.group
        new_ops = _stacked_matmul(match) if isinstance(match, MatmulMatch) else _stacked_gptq(match.group)
        outs = [p.result for p in group]
        axis = tensor_type(outs[0]).rank - 1
        split = SplitOp(new_ops[-1].results[0], sizes=[tensor_type(o).shape[axis] for o in outs], axis=axis)
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
        w = ConcatOp(rhs, axis=1)
        return [w, MatmulOp(x, w.result)]
    # the guards checked that every rhs is a [1, 0] permute
    w = ConcatOp([r.owner.input for r in rhs if isinstance(r.owner, PermuteOp)], axis=0)
    wt = PermuteOp(w.result, perm=[1, 0])
    return [w, wt, MatmulOp(x, wt.result)]


def _stacked_gptq(group: list[QMatmulGptqOp]) -> list[Operation]:
    first = group[0]
    qweight = ConcatOp([p.qweight for p in group], axis=1)
    scales = ConcatOp([p.scales for p in group], axis=1)
    new_ops: list[Operation] = [qweight, scales]
    qzeros = None
    if first.qzeros is not None:
        # the guards checked that qzeros presence agrees
        new_ops.append(zeros := ConcatOp([p.qzeros for p in group if p.qzeros is not None], axis=1))
        qzeros = zeros.result
    mm = QMatmulGptqOp(first.x, qweight.result, scales.result, qzeros, first.g_idx, **first.params)
    return [*new_ops, mm]


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
