"""`gptq-repack`: fg.qmatmul.gptq ==> fg.gptq.repack + fg.qmatmul.gptq_tiled, for a CUDA target.

    %y = fg.qmatmul.gptq %x, %qw, %s zeros %qz g_idx %g {bits = 4, group_size = 128, desc_act = true}
After:
    %qt, %zt, %perm = fg.gptq.repack %qw zeros %qz g_idx %g {bits = 4, group_size = 128, ...}
    %y = fg.qmatmul.gptq_tiled %x, %qt, %s, %zt perm %perm {bits = 4, group_size = 128, ...}

The repack's operands are weights, so the eager runtime folds it once at compile time (the
module then holds only the repacked tensors); `fusegraph opt --print-ir-after-all` shows
what will run. One repack per distinct (qweight, qzeros, g_idx, properties): ops sharing
weights share it. The CPU path keeps the checkpoint layout (the pass is not run there).

It refuses (saying why, in debug mode) a clip (the tiled kernels have none), K not a multiple
of 128, N not of 64, a group size other than -1 or a multiple of 128, and a qweight or x whose
K is not static.

Options: `target=cuda` (the only target with a tiled kernel; `gptq-repack{target=cuda}`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.compiler.types import TensorType
from fusegraph.ops.gptq import QMatmulGptqOp
from fusegraph.ops.gptq_layout import layout_error
from fusegraph.ops.gptq_repack import GptqRepackOp, QMatmulGptqTiledOp
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    PassReport,
    apply_patterns,
    current_report,
    no_match,
)

TARGETS = ("cuda",)


@dataclass
class _Match:
    op: QMatmulGptqOp


class GptqRepackPattern(GuardedPattern[_Match]):
    """fg.qmatmul.gptq -> fg.gptq.repack + fg.qmatmul.gptq_tiled"""

    anchor = QMatmulGptqOp
    counter = "repacked"

    def __init__(self, report: PassReport, cache: dict[tuple[object, ...], GptqRepackOp]) -> None:
        super().__init__(report)
        self.cache = cache

    def match(self, op: QMatmulGptqOp) -> _Match | NoMatch:
        if op.clip is not None:
            return no_match("the op has a clip (the tiled kernels apply none)")
        x_type, qw_type = op.x.type, op.qweight.type
        assert isinstance(x_type, TensorType) and isinstance(qw_type, TensorType)  # the op verified them
        k_dim, n_dim = x_type.shape[1], qw_type.shape[1]
        if not (k_dim.is_static and n_dim.is_static):
            return no_match("K or N is not static")
        if (why := layout_error(k_dim.value, n_dim.value, op.group_size)) is not None:
            return no_match(why)
        return _Match(op)

    def _repack(self, op: QMatmulGptqOp, rewriter: PatternRewriter) -> GptqRepackOp:
        """The repack of op's weights: shared by every op with the same operands and properties."""
        params = {k: v for k, v in op.params.items() if k != "clip"}
        key = (op.qweight, op.qzeros, op.g_idx, *params.values())
        if (found := self.cache.get(key)) is not None:
            return found
        repack = GptqRepackOp(op.qweight, op.qzeros, op.g_idx, **params)
        # right after the last of its operands' definitions: before every op that may share it
        rewriter.insert(repack, InsertPoint.before(_first_user_point(op)))
        self.cache[key] = repack
        return repack

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        op = match.op
        repack = self._repack(op, rewriter)
        tiled = QMatmulGptqTiledOp(op.x, repack.qweight_t, op.scales, repack.qzeros_t, repack.perm, bits=op.bits,
                                   group_size=op.group_size, zero_format=op.zero_format)  # fmt: skip
        rewriter.insert(tiled, InsertPoint.before(op))
        rewriter.replace_all_uses_with(op.result, tiled.result)
        rewriter.erase(op)


def _first_user_point(op: QMatmulGptqOp) -> Operation:
    """The op after the last definition among the weights (qweight, qzeros, g_idx) in the block,
    so that a repack placed there dominates every matmul that uses those weights."""
    block = op.parent_block()
    assert block is not None
    defs = [
        v.owner for v in (op.qweight, op.qzeros, op.g_idx) if v is not None and isinstance(v.owner, Operation)
    ]
    last: Operation | None = None
    for candidate in block.ops:
        if candidate in defs:
            last = candidate
    if last is None or last.next_op is None:
        first = block.first_op
        assert first is not None
        return first
    return last.next_op


@dataclass(frozen=True)
class GptqRepack(ModulePass):
    """fg.qmatmul.gptq ==> fg.gptq.repack (folded at compile time) + fg.qmatmul.gptq_tiled"""

    name = "gptq-repack"
    target: str = "cuda"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"gptq-repack: target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        report = current_report(self.name)
        report.declare("repacked", "skipped")
        apply_patterns(op, [GptqRepackPattern(report, {})])
