"""`fg.weight`: a named graph constant whose value is bound at compile or run time.

It lives in the IR core because the core itself needs it: `Graph.add_weight` builds it,
`Graph.weights` lists it, and the lowerings turn each one into a graph placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.opbase import FgOp, register_op
from fusegraph.compiler.types import TensorType


@register_op
@irdl_op_definition
class WeightOp(FgOp):
    """`%w = fg.weight "layers.0.self_attn.q_proj.qweight" : !fg.tensor<[512, 4096], i32, cpu>`

    Weights are never printed inline; `fusegraph.compile(..., weights=...)` binds them by name.
    The lowering drivers turn each weight into a graph placeholder, so it has no torch
    implementation of its own.

    Example:
        >>> op = WeightOp("lm_head.weight", TensorType(DType.float16, [32000, 4096]))
    """

    name = "fg.weight"
    weight_name_attr = prop_def(StringAttr, prop_name="name")
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$name attr-dict `:` type($result)"

    def __init__(self, name: str, type: TensorType) -> None:
        super().__init__([], {"name": StringAttr(name)}, rule=lambda: [type])

    @property
    def weight_name(self) -> str:
        """The name the weight is bound by."""
        return self.weight_name_attr.data

    def infer_types(self) -> Sequence[Attribute]:
        return [self.result.type]
