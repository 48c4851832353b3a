"""The IR core: the `fg` dialect's types, the Graph builder, dims, dtypes, devices, and
text IR (print with `str(graph)`; `fusegraph.dialect.parse` reads it back)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusegraph.compiler.lazy import lazy_exports

if TYPE_CHECKING:
    from fusegraph.compiler.devices import DeviceRef
    from fusegraph.compiler.dims import Dim
    from fusegraph.compiler.dtypes import DType
    from fusegraph.compiler.errors import IRParseError, IRVerifyError
    from fusegraph.compiler.graph import Graph
    from fusegraph.compiler.types import BufferType, TensorType
    from fusegraph.compiler.values import BufferValue, TensorValue, Value

# Lazy (PEP 562): the CLIs import modules under `fusegraph.compiler`, and `--help` needs
# neither xDSL nor sympy. Each name is imported from its module on first use.
_HOMES = {
    "BufferType": "fusegraph.compiler.types",
    "BufferValue": "fusegraph.compiler.values",
    "DType": "fusegraph.compiler.dtypes",
    "DeviceRef": "fusegraph.compiler.devices",
    "Dim": "fusegraph.compiler.dims",
    "Graph": "fusegraph.compiler.graph",
    "IRParseError": "fusegraph.compiler.errors",
    "IRVerifyError": "fusegraph.compiler.errors",
    "TensorType": "fusegraph.compiler.types",
    "TensorValue": "fusegraph.compiler.values",
    "Value": "fusegraph.compiler.values",
}


__getattr__ = lazy_exports(__name__, _HOMES)


__all__ = [
    "BufferType",
    "BufferValue",
    "DType",
    "DeviceRef",
    "Dim",
    "Graph",
    "IRParseError",
    "IRVerifyError",
    "TensorType",
    "TensorValue",
    "Value",
]
