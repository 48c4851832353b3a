"""The op families. Importing this package registers every op in the `fg` dialect and
installs the builders behind TensorValue's operators."""

import sys

from fusegraph.compiler.values import install_tensor_ops
from fusegraph.ops.add_rms_norm import add_rms_norm
from fusegraph.ops.attention import paged_attention
from fusegraph.ops.collective import allgather, allreduce
from fusegraph.ops.custom import custom, register_custom_op
from fusegraph.ops.elementwise import (
    add,
    cast,
    clamp,
    constant,
    div,
    exp,
    mul,
    neg,
    relu,
    rsqrt,
    silu,
    sub,
)
from fusegraph.ops.gptq import qmatmul_gptq
from fusegraph.ops.gptq_permute import gptq_permute_columns
from fusegraph.ops.gptq_repack import gptq_repack, qmatmul_gptq_tiled
from fusegraph.ops.kv_cache import kv_cache_store
from fusegraph.ops.matmul import matmul
from fusegraph.ops.norm import rms_norm, softmax
from fusegraph.ops.rope import rope
from fusegraph.ops.rope_split_store import rope_split_store
from fusegraph.ops.shape import concat, permute, reshape, split, transpose
from fusegraph.ops.silu_mul import silu_mul
from fusegraph.ops.slice import gather, slice_tensor

install_tensor_ops(sys.modules[__name__])  # a module satisfies TensorOps

__all__ = [
    "add",
    "add_rms_norm",
    "allgather",
    "allreduce",
    "cast",
    "clamp",
    "concat",
    "constant",
    "custom",
    "div",
    "exp",
    "gather",
    "gptq_permute_columns",
    "gptq_repack",
    "kv_cache_store",
    "matmul",
    "mul",
    "neg",
    "paged_attention",
    "permute",
    "qmatmul_gptq",
    "qmatmul_gptq_tiled",
    "register_custom_op",
    "relu",
    "reshape",
    "rms_norm",
    "rope",
    "rope_split_store",
    "rsqrt",
    "silu",
    "silu_mul",
    "slice_tensor",
    "softmax",
    "split",
    "sub",
    "transpose",
]
