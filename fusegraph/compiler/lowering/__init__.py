"""Lowering drivers: fg IR to torch FX (`to_fx`) and to torch-mlir (`to_torch_mlir`).

Both are imported on first use (PEP 562), so importing this package loads neither torch
(`fusegraph lower --help`) nor torch-mlir and IREE.

Example:
    >>> from fusegraph.compiler.lowering import to_torch_mlir
    >>> print(to_torch_mlir(graph, mode="custom"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusegraph.compiler.lowering.fx import to_fx
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir


def __getattr__(name: str) -> object:
    if name == "to_fx":
        from fusegraph.compiler.lowering.fx import to_fx

        return to_fx
    if name == "to_torch_mlir":
        from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir

        return to_torch_mlir
    raise AttributeError(f"module 'fusegraph.compiler.lowering' has no attribute {name!r}")


__all__ = ["to_fx", "to_torch_mlir"]
