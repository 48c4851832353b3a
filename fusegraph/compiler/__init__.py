"""The IR core: the `fg` dialect's types, the Graph builder, dims, dtypes, devices, and
text IR (print with `str(graph)`; `fusegraph.dialect.parse` reads it back)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "BufferType": "types",
    "BufferValue": "values",
    "DType": "dtypes",
    "DeviceRef": "devices",
    "Dim": "dims",
    "Graph": "graph",
    "IRParseError": "errors",
    "IRVerifyError": "errors",
    "TensorType": "types",
    "TensorValue": "values",
    "Value": "values",
}


def __getattr__(name: str) -> Any:
    if (home := _HOMES.get(name)) is not None:
        return getattr(importlib.import_module(f"fusegraph.compiler.{home}"), name)
    raise AttributeError(f"module 'fusegraph.compiler' has no attribute {name!r}")


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
