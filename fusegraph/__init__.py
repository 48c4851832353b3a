"""fusegraph: a Python graph-compiler frontend for quantized LLM attention.

Build a graph of GPTQ matmuls, rope, split and paged KV-cache ops; fuse rope + split +
store; lower to torch-mlir; run eagerly (PyTorch, Triton on CUDA) or through IREE.
"""

from typing import Any

from fusegraph import ops
from fusegraph.compiler import BufferType, DeviceRef, Dim, DType, Graph, TensorType, TensorValue

__all__ = ["BufferType", "DType", "DeviceRef", "Dim", "Graph", "TensorType", "TensorValue", "compile", "ops"]


def compile(graph: Graph, backend: str = "eager", device: str = "cpu", **kwargs: Any) -> Any:  # noqa: A001
    """Compile `graph` for `backend` ("eager" or "iree") on `device` ("cpu" or "cuda").

    Returns a callable taking the graph inputs as torch tensors and returning the outputs.
    See `fusegraph.runtime.compile` for the options.
    """
    from fusegraph.runtime import compile as _compile

    return _compile(graph, backend=backend, device=device, **kwargs)
