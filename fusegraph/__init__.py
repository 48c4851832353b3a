"""fusegraph: a Python graph-compiler frontend for quantized LLM attention.

Build a graph of GPTQ matmuls, rope, split and paged KV-cache ops; fuse rope + split +
store; lower to torch-mlir; run eagerly (PyTorch, Triton on CUDA) or through IREE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# `fusegraph.compile` is `fusegraph.runtime.compile` (that package imports torch lazily too).
from fusegraph.runtime import compile

if TYPE_CHECKING:
    from fusegraph import ops
    from fusegraph.compiler import BufferType, DeviceRef, Dim, DType, Graph, TensorType, TensorValue
    from fusegraph.dialect import parse
    from fusegraph.distributed import launch
    from fusegraph.generate import Generator, SamplingParams


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562), so that `fusegraph --help` does not import torch (3 s) through `ops`.
    import importlib

    if name == "ops":
        return importlib.import_module("fusegraph.ops")
    if name in ("BufferType", "DeviceRef", "Dim", "DType", "Graph", "TensorType", "TensorValue"):
        return getattr(importlib.import_module("fusegraph.compiler"), name)
    if name in ("Generator", "SamplingParams"):
        return getattr(importlib.import_module("fusegraph.generate"), name)
    if name == "parse":  # text IR -> Graph
        return importlib.import_module("fusegraph.dialect").parse
    if name == "launch":  # tensor parallelism: one process per rank
        return importlib.import_module("fusegraph.distributed").launch
    raise AttributeError(f"module 'fusegraph' has no attribute {name!r}")


__all__ = [
    "BufferType", "DType", "DeviceRef", "Dim", "Generator", "Graph", "SamplingParams", "TensorType", "TensorValue",
    "compile", "launch", "ops", "parse",
]  # fmt: skip
