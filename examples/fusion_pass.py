"""Write, register and run a small fusion pass: `x @ W + b` becomes one `addmm` custom op.

    Before:  %mm = fg.matmul %x, %w      %y = fg.add %mm, %b
    After:   %y = fg.custom %x, %w, %b {symbol = "examples.addmm", parameters = {}}

The pattern is guard-first (`fusegraph/passes/patterns.py`): `match` only looks and returns
`no_match(reason)` at the first guard that fails; `rewrite` is the only place that mutates.
The pass is a frozen-dataclass `ModulePass`, registered with `register_pass` so that pipeline
text (`"fuse-addmm,dce"`) and `fusegraph opt --load-pass-plugin examples/fusion_pass.py`
know it. The script prints the IR before and after, the statistics, and why the pattern
refused the one candidate it left alone, then checks that both graphs compute the same thing.

Run:
    .venv/bin/python examples/fusion_pass.py
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import torch
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.types import tensor_type
from fusegraph.ops.custom import CustomOp
from fusegraph.ops.elementwise import AddOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.passes import PassManager, register_pass
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    apply_patterns,
    current_report,
    defined_by,
    no_match,
    single_user,
)

CPU = DeviceRef.CPU()


# --- the fused op -----------------------------------------------------------------------
def addmm_shape(types: list[TensorType], params: dict) -> list[TensorType]:
    """x [M, K] @ w [K, N] + b [N] -> [M, N]."""
    x, w, b = types
    if w.shape[0] != x.shape[1] or b.shape != (w.shape[1],):
        raise ValueError(f"examples.addmm: x {x}, w {w}, b {b} do not chain as [M, K] @ [K, N] + [N]")
    return [TensorType(x.dtype, [x.shape[0], w.shape[1]], x.device)]


ops.register_custom_op(
    "examples.addmm", shape_rule=addmm_shape, torch_impl=lambda x, w, b: torch.addmm(b, x, w)
)


# --- the pattern and the pass -----------------------------------------------------------
@dataclass
class AddmmMatch:
    add: AddOp
    matmul: MatmulOp


class FuseAddmmPattern(GuardedPattern[AddmmMatch]):
    """add(matmul(x, w), b) -> examples.addmm(x, w, b)"""

    anchor = AddOp
    counter = "fused"

    def match(self, op: AddOp) -> AddmmMatch | NoMatch:
        mm = defined_by(op.lhs, MatmulOp, "add lhs")
        if isinstance(mm, NoMatch):
            return mm
        # another user still needs the matmul alone: fusing would compute it twice
        if isinstance(user := single_user(mm.result, "matmul result"), NoMatch):
            return user
        if (rank := tensor_type(mm.lhs).rank) != 2:
            return no_match(f"matmul is batched (lhs rank {rank})")
        n, bias = mm.result.type.shape[1], tensor_type(op.rhs).shape
        if bias != (n,):
            return no_match(f"bias shape {[str(d) for d in bias]} is not [{n}]")
        return AddmmMatch(op, mm)

    def rewrite(self, match: AddmmMatch, rewriter: PatternRewriter) -> None:
        fused = CustomOp([match.matmul.lhs, match.matmul.rhs, match.add.rhs], symbol="examples.addmm")
        rewriter.replace(match.add, fused)
        rewriter.erase(match.matmul)


@register_pass
@dataclass(frozen=True)
class FuseAddmm(ModulePass):
    """add(matmul(x, w), b) ==> fg.custom "examples.addmm"(x, w, b)"""

    name = "fuse-addmm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "skipped")
        apply_patterns(op, [FuseAddmmPattern(report)])


# --- a graph to run it on ---------------------------------------------------------------
def build() -> Graph:
    """Two biased projections; the second matmul is also an output, so it cannot be fused."""
    with Graph("two_linears", input_types=[TensorType(DType.float32, ["tokens", 32], CPU)]) as g:
        (x,) = g.inputs
        w1 = g.add_weight("fc1.weight", TensorType(DType.float32, [32, 64], CPU))
        b1 = g.add_weight("fc1.bias", TensorType(DType.float32, [64], CPU))
        w2 = g.add_weight("fc2.weight", TensorType(DType.float32, [64, 16], CPU))
        b2 = g.add_weight("fc2.bias", TensorType(DType.float32, [16], CPU))
        h = ops.relu(x @ w1 + b1)
        logits = h @ w2
        g.output(logits + b2, logits)
    return g


def main() -> int:
    before = build()
    print("=== before ===")
    print(before)

    after = before.clone()
    why = io.StringIO()
    stats = PassManager("fuse-addmm,dce", debug=why).run(after)
    print("=== statistics ===")
    print(stats)
    print("=== why the pattern refused ===")
    print(why.getvalue().rstrip())
    print("=== after ===")
    print(after)

    gen = torch.Generator().manual_seed(0)
    weights = {
        name: torch.randn(*(int(d) for d in t.shape), generator=gen) for name, t in before.weights.items()
    }
    x = torch.randn(7, 32, generator=gen)
    want = fusegraph.compile(before, backend="eager", device="cpu", weights=weights, pipeline=None)(x)
    got = fusegraph.compile(after, backend="eager", device="cpu", weights=weights, pipeline=None)(x)
    err = max(float((a - b).abs().max()) for a, b in zip(got, want, strict=True))
    fused = stats["fuse-addmm"].counters
    ok = fused == {"fused": 1, "skipped": 1} and err < 1e-4
    print(f"{'PASS' if ok else 'FAIL'}: {fused['fused']} fused, {fused['skipped']} skipped; "
          f"fused graph matches the original (max diff {err:.1e})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
