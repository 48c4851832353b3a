"""fusegraph: a Python graph-compiler frontend for quantized LLM attention.

Build a graph of GPTQ matmuls, rope, split and paged KV-cache ops; fuse rope + split +
store; lower to torch-mlir; run eagerly (PyTorch, Triton on CUDA) or through IREE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusegraph.compiler.lazy import lazy_exports

# `fusegraph.compile` is `fusegraph.runtime.compile` (that package imports torch lazily too).
from fusegraph.runtime import compile

if TYPE_CHECKING:
    from fusegraph import ops
    from fusegraph.compiler import BufferType, DeviceRef, Dim, DType, Graph, TensorType, TensorValue
    from fusegraph.dialect import parse
    from fusegraph.distributed import launch
    from fusegraph.generate import Generator, SamplingParams


# Lazy (PEP 562), so that `fusegraph --help` does not import torch (3 s) through `ops`.
__getattr__ = lazy_exports(
    __name__,
    {
        "ops": "fusegraph.ops",
        **dict.fromkeys(
            ["BufferType", "DeviceRef", "Dim", "DType", "Graph", "TensorType", "TensorValue"],
            "fusegraph.compiler",
        ),
        "Generator": "fusegraph.generate",
        "SamplingParams": "fusegraph.generate",
        "parse": "fusegraph.dialect",  # text IR -> Graph
        "launch": "fusegraph.distributed",  # tensor parallelism: one process per rank
    },
)


__all__ = [
    "BufferType", "DType", "DeviceRef", "Dim", "Generator", "Graph", "SamplingParams", "TensorType", "TensorValue",
    "compile", "launch", "ops", "parse",
]  # fmt: skip
