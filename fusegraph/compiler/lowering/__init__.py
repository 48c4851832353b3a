"""Lowering drivers: fg IR to torch FX (`to_fx`) and to torch-mlir (`to_torch_mlir`).

`to_torch_mlir` imports torch-mlir only when called, so importing this package never
loads torch-mlir or IREE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusegraph.compiler.lowering.fx import to_fx


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `fusegraph lower --help` imports this package but not torch.
    if name == "to_fx":
        from fusegraph.compiler.lowering.fx import to_fx

        return to_fx
    raise AttributeError(f"module 'fusegraph.compiler.lowering' has no attribute {name!r}")


def to_torch_mlir(graph: Any, *args: Any, **kwargs: Any) -> Any:
    """Lower `graph` to a torch-mlir module; see `fusegraph.compiler.lowering.torch_mlir`."""
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir as _to_torch_mlir

    return _to_torch_mlir(graph, *args, **kwargs)


__all__ = ["to_fx", "to_torch_mlir"]
