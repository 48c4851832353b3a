"""`fold-act-order-permutation`: an act-order matmul's `x[:, perm]` is written by x's producer.

`fg.qmatmul.gptq_tiled %x, ... perm %p` (what `gptq-repack` makes of an act-order matmul)
gathers x's columns per call; without perm it computes `x @ W_sorted`. So when the op that
produces x can emit `x[:, perm]` itself, the matmul drops its perm and the per-call
permutation disappears:

MLP (down_proj), free per call: `silu(a) * b` permuted is `silu(a[:, p]) * b[:, p]`, and a
GPTQ projection's permuted output columns are those of its permuted weights.
    %qt, %zt, %pg = fg.gptq.repack %qw zeros %qz g_idx %g ...     %gu = fg.qmatmul.gptq_tiled %h, %qt, %s, %zt perm %pg
    %a, %b = fg.split %gu    %y = fg.mul (fg.silu %a), %b    %o = fg.qmatmul.gptq_tiled %y, ... perm %p
After:
    %qw2 = fg.gptq.permute_columns %qw, %p {parts = 2, packed_bits = 0}   (+ qzeros packed_bits = bits, scales, bias)
    %qt2, %zt2, %pg2 = fg.gptq.repack %qw2 zeros %qz2 g_idx %g ...    %gu2 = fg.qmatmul.gptq_tiled %h, %qt2, %s2, %zt2 perm %pg2
    %a2, %b2 = fg.split %gu2    %y2 = fg.mul (fg.silu %a2), %b2    %o = fg.qmatmul.gptq_tiled %y2, ...  (no perm)
The permute_columns and the repack read weights only, so the eager runtime folds them once at
compile time. Separate gate/up projections work the same way (parts = 1 each), with or
without a bias add. The old chain goes (the guards checked nobody else reads it); a repack
shared with another matmul stays for it.

RMSNorm (q/k/v, gate/up inputs): `%x = fg.rms_norm %h, %w` feeding the matmul becomes a new
`fg.rms_norm %h, %w perm %p` (one per distinct (rms_norm, perm) pair); the original stays for
its other users, and is erased when there are none.

Attention (o_proj's input): `%x = fg.reshape (fg.attention.paged %q, ... )` `[T, H, D] -> [T, H·D]`
becomes `fg.reshape (fg.attention.paged %q, ... perm %p)`: the attention's last kernel stores each
output element at its permuted column. The new attention goes right before the matmul (after perm's
repack), so the guard refuses a buffer written between the two (the attention would read it later).

Anything else (a chain with other users, a cache write in between, another producer) is left as
is, counted in `skipped` with the reason (`--debug`): the runtime permutation stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.ops.attention import PagedAttentionOp
from fusegraph.ops.elementwise import AddOp, MulOp, SiluOp
from fusegraph.ops.gptq_permute import GptqPermuteColumnsOp
from fusegraph.ops.gptq_repack import GptqRepackOp, QMatmulGptqTiledOp
from fusegraph.ops.norm import RmsNormOp
from fusegraph.ops.shape import ReshapeOp, SplitOp
from fusegraph.passes.fold_act_order_match import AttentionFold, MlpFold, NormFold, Projection, match_fold
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    PassReport,
    apply_patterns,
    block_index,
    current_report,
)


class FoldActOrderPattern(GuardedPattern[MlpFold | NormFold | AttentionFold]):
    """fg.qmatmul.gptq_tiled ... perm %p  ->  its producer writes x[:, p]; the matmul has no perm"""

    anchor = QMatmulGptqTiledOp
    counter = "folded"

    def __init__(self, report: PassReport) -> None:
        super().__init__(report)
        self.norms: dict[tuple[RmsNormOp, SSAValue], RmsNormOp] = {}

    def match(self, op: QMatmulGptqTiledOp) -> MlpFold | NormFold | AttentionFold | NoMatch:
        return match_fold(op)

    def rewrite(self, match: MlpFold | NormFold | AttentionFold, rewriter: PatternRewriter) -> None:
        if isinstance(match, AttentionFold):
            self.report.count("attention")
            _rewrite_attention(match, rewriter)
            return
        if isinstance(match, NormFold):
            self.report.count("norm")
            _replace_x(match.matmul, self._permuted_norm(match, rewriter).result, rewriter)
            if match.norm.result.first_use is None:  # no other reader: later passes must not see it
                rewriter.erase(match.norm)
            return
        self.report.count("mlp")
        _rewrite_mlp(match, rewriter)

    def _permuted_norm(self, match: NormFold, rewriter: PatternRewriter) -> RmsNormOp:
        """One `fg.rms_norm ... perm` per (norm, perm), after both: it dominates every matmul reading the pair."""
        norm, perm = match.norm, match.perm
        if (found := self.norms.get((norm, perm))) is not None:
            return found
        new = RmsNormOp(norm.input, norm.weight, perm, eps=norm.eps.value.data)
        after: Operation = norm
        if isinstance(perm.owner, Operation) and block_index(perm.owner) > block_index(norm):
            after = perm.owner
        rewriter.insert(new, InsertPoint.after(after))
        self.norms[(norm, perm)] = new
        return new


def _replace_x(matmul: QMatmulGptqTiledOp, x: SSAValue, rewriter: PatternRewriter) -> None:
    """`matmul` reading `x` (already permuted) instead of gathering its x through perm."""
    new = QMatmulGptqTiledOp(x, matmul.qweight_t, matmul.scales, matmul.qzeros_t, None, **matmul.params)
    rewriter.insert(new, InsertPoint.before(matmul))
    rewriter.replace_all_uses_with(matmul.result, new.result)
    rewriter.erase(matmul)


def _rewrite_attention(m: AttentionFold, rewriter: PatternRewriter) -> None:
    """The attention again with perm, and its reshape, right before the matmul (perm's owner precedes it)."""
    old = m.attention
    attention = PagedAttentionOp(
        old.q, old.input_row_offsets, old.kv_blocks, old.cache_lengths, old.lookup_table, m.perm,
        layer_idx=old.layer_idx, scale=old.scale, mask=old.mask, sliding_window=old.sliding_window,
    )  # fmt: skip
    reshape = ReshapeOp(attention.result, shape=m.reshape.result.type.shape)
    rewriter.insert([attention, reshape], InsertPoint.before(m.matmul))
    _replace_x(m.matmul, reshape.result, rewriter)
    rewriter.erase(m.reshape)
    rewriter.erase(old)


def _rewrite_mlp(m: MlpFold, rewriter: PatternRewriter) -> None:
    perm, parts = m.down.perm, 2 if m.split is not None else 1
    assert perm is not None  # the match checked it
    new_ops: list[Operation] = []
    outs = [_permuted_projection(p, perm, parts, new_ops) for p in m.projections]
    if m.split is not None:
        new_ops.append(split := SplitOp(outs[0], sizes=m.split.sizes, axis=1))
        outs = list(split.outputs)
    gate, up = outs
    new_ops.append(silu := SiluOp(gate))
    new_ops.append(mul := MulOp(silu.result, up) if m.gate_first else MulOp(up, silu.result))
    rewriter.insert(new_ops, InsertPoint.before(m.down))
    _replace_x(m.down, mul.result, rewriter)
    for op in (m.mul, m.silu, m.split):
        if op is not None:
            rewriter.erase(op)
    for proj in m.projections:
        if proj.bias is not None:
            rewriter.erase(proj.bias)
        rewriter.erase(proj.matmul)
        if all(r.first_use is None for r in proj.repack.results):  # not shared with another matmul
            rewriter.erase(proj.repack)


def _permuted_projection(proj: Projection, perm: SSAValue, parts: int, new_ops: list[Operation]) -> SSAValue:
    """`proj` on column-permuted weights (a new repack: the old one may be shared); its output."""
    old, mm = proj.repack, proj.matmul

    def permuted(value: SSAValue, packed_bits: int = 0) -> SSAValue:
        new_ops.append(op := GptqPermuteColumnsOp(value, perm, parts=parts, packed_bits=packed_bits))
        return op.result

    qzeros = None if old.qzeros is None else permuted(old.qzeros, old.bits)
    repack = GptqRepackOp(permuted(old.qweight), qzeros, old.g_idx, **old.params)
    scales = permuted(mm.scales)
    # the matmul's own input perm is a function of g_idx (unchanged): take the new repack's
    own_perm = repack.perm if mm.perm is not None and mm.perm is old.perm else mm.perm
    new_ops += [repack, new := QMatmulGptqTiledOp(mm.x, repack.qweight_t, scales, repack.qzeros_t, own_perm,
                                                  **mm.params)]  # fmt: skip
    if (bias := proj.bias_value) is None:
        return new.result
    assert proj.bias is not None
    first = proj.bias.operands[0] is mm.result
    add = AddOp(new.result, permuted(bias)) if first else AddOp(permuted(bias), new.result)
    new_ops.append(add)
    return add.result


@dataclass(frozen=True)
class FoldActOrderPermutation(ModulePass):
    """An act-order fg.qmatmul.gptq_tiled's x[:, perm] folded into x's producer (MLP weights, rms_norm, attention)"""

    name = "fold-act-order-permutation"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("folded", "mlp", "norm", "attention", "skipped")
        # reverse: a down_proj is folded before its gate_up, whose new repack's perm the norm fold then reads
        apply_patterns(op, [FoldActOrderPattern(report)], reverse=True)
