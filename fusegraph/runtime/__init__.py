"""Executors (eager torch on CPU/CUDA, IREE on CPU/CUDA) and the paged KV cache manager."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

from fusegraph.compiler.lazy import lazy_exports

if TYPE_CHECKING:
    import torch

    from fusegraph.compiler.graph import Graph
    from fusegraph.runtime.eager import CompiledGraph
    from fusegraph.runtime.iree_backend import IreeCompiledGraph
    from fusegraph.runtime.kv_cache_manager import Batch, PagedKVCacheManager
    from fusegraph.runtime.pipeline import DEFAULT_PIPELINE, default_pipeline

_BACKENDS = ("eager", "iree")
# Lazy (PEP 562): `fusegraph run --help` imports this package without torch.
_LAZY = {
    "CompiledGraph": "fusegraph.runtime.eager",
    "Batch": "fusegraph.runtime.kv_cache_manager",
    "PagedKVCacheManager": "fusegraph.runtime.kv_cache_manager",
    "DEFAULT_PIPELINE": "fusegraph.runtime.pipeline",
    "default_pipeline": "fusegraph.runtime.pipeline",
}


__getattr__ = lazy_exports(__name__, _LAZY)


class CompiledModel(Protocol):
    """What `compile` returns on every backend (`CompiledGraph`, `IreeCompiledGraph`)."""

    graph: Graph
    """The IR that runs (after the pipeline)."""
    pipeline: str | None
    """The pipeline text that ran, or None."""

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


@overload
def compile(
    graph: Graph,
    backend: Literal["eager"] = "eager",
    device: str = "cpu",
    weights: Mapping[str, torch.Tensor] | None = None,
    cuda_graphs: bool = False,
    pipeline: str | None = "default",
    **kwargs: Any,
) -> CompiledGraph: ...
@overload
def compile(
    graph: Graph,
    backend: Literal["iree"],
    device: str = "cpu",
    weights: Mapping[str, torch.Tensor] | None = None,
    cuda_graphs: bool = False,
    pipeline: str | None = "default",
    **kwargs: Any,
) -> IreeCompiledGraph: ...
@overload
def compile(
    graph: Graph,
    backend: str = "eager",
    device: str = "cpu",
    weights: Mapping[str, torch.Tensor] | None = None,
    cuda_graphs: bool = False,
    pipeline: str | None = "default",
    **kwargs: Any,
) -> CompiledModel: ...
def compile(  # noqa: A001 - the public name, as in `fusegraph.compile`
    graph: Graph,
    backend: str = "eager",
    device: str = "cpu",
    weights: Mapping[str, torch.Tensor] | None = None,
    cuda_graphs: bool = False,
    pipeline: str | None = "default",
    **kwargs: Any,
) -> CompiledModel:
    """Compile `graph` for `backend` on `device`.

    Args:
        graph: the graph to run; it is verified first.
        backend: "eager" (PyTorch; Triton kernels on CUDA) or "iree" (torch-mlir + IREE).
        device: "cpu" or "cuda" ("cuda:N" for a specific GPU).
        weights: name -> tensor for every `fg.weight` of the graph, exactly.
        cuda_graphs: eager on CUDA only: capture a CUDA graph per input-shape key and replay.
        pipeline: the passes run (on a clone) before execution: "default" is
            `fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce`, plus
            `gptq-repack` before `dce` for the eager backend on CUDA when that pass is
            registered (`fusegraph.runtime.pipeline`); None runs the graph as built; any other
            string is pipeline text (`"cse,dce"`). `model.graph` is the IR that runs and
            `model.pipeline` the text that ran.
        **kwargs: backend options, passed to the IREE backend.

    Returns:
        A `CompiledModel`: `model(*inputs) -> tuple[Tensor, ...]` of the graph outputs; buffer
        inputs (the KV blocks) are updated in the caller's tensors. Typed `CompiledGraph` for
        `backend="eager"` and `IreeCompiledGraph` for `backend="iree"`.

    Example:
        >>> model = fusegraph.compile(g, backend="eager", device="cpu", weights=attn.state_dict())
        >>> (y,) = model(x, row_offsets, *kv_inputs)
    """
    from fusegraph.runtime.eager import CompiledGraph
    from fusegraph.runtime.pipeline import run_pipeline

    if backend == "eager":
        if kwargs:
            raise ValueError(f"compile: backend='eager' takes no options {sorted(kwargs)}")
        return CompiledGraph(
            graph, device=device, weights=weights, cuda_graphs=cuda_graphs, pipeline=pipeline
        )
    if backend == "iree":
        graph.verify()
        ran, text, _ = run_pipeline(graph, pipeline, "iree", device)
        model = _compile_iree(ran, device=device, weights=weights, cuda_graphs=cuda_graphs, **kwargs)
        model.pipeline = text
        return model
    raise ValueError(f"compile: unknown backend {backend!r}; allowed: {', '.join(_BACKENDS)}")


def _compile_iree(graph: Graph, *, cuda_graphs: bool, **kwargs: Any) -> IreeCompiledGraph:
    if cuda_graphs:
        raise ValueError(
            "compile: cuda_graphs=True is an eager-backend option; not supported by backend='iree'"
        )
    try:
        from fusegraph.runtime.iree_backend import compile_iree
    except ModuleNotFoundError as err:
        if err.name != "fusegraph.runtime.iree_backend":
            raise
        raise RuntimeError(
            "compile: backend='iree' needs fusegraph.runtime.iree_backend, which is not available"
        ) from err
    return compile_iree(graph, **kwargs)


__all__ = [
    "DEFAULT_PIPELINE",
    "Batch",
    "CompiledGraph",
    "CompiledModel",
    "PagedKVCacheManager",
    "compile",
    "default_pipeline",
]
