"""fusegraph: a Python graph-compiler frontend for quantized LLM attention.

Build a graph of GPTQ matmuls, rope, split and paged KV-cache ops; fuse rope + split +
store; lower to torch-mlir; run eagerly (PyTorch, Triton on CUDA) or through IREE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def compile(graph: Graph, backend: str = "eager", device: str = "cpu", **kwargs: Any) -> Any:  # noqa: A001
    """Compile `graph` for `backend` ("eager" or "iree") on `device` ("cpu" or "cuda").

    Runs the default pass pipeline first (`pipeline="default"`: fuse the qkv projections and
    rope + split + store, canonicalize, cse, dce; `pipeline=None` runs the graph as built).
    Returns a callable taking the graph inputs as torch tensors and returning the outputs.
    See `fusegraph.runtime.compile` for the options.

    Example:
        >>> model = fusegraph.compile(g, device="cuda", weights=attn.state_dict(), cuda_graphs=True)
        >>> model.pipeline
        'fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce'
    """
    from fusegraph.runtime import compile as _compile

    return _compile(graph, backend=backend, device=device, **kwargs)
