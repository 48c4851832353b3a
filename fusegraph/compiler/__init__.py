"""The IR core: the `fg` dialect's types, the Graph builder, dims, dtypes, devices, and
text IR (print with `str(graph)`, read with `parse`)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusegraph.compiler.devices import DeviceRef
    from fusegraph.compiler.dims import Dim
    from fusegraph.compiler.dtypes import DType
    from fusegraph.compiler.errors import IRParseError, IRVerifyError
    from fusegraph.compiler.graph import Graph
    from fusegraph.compiler.parse import make_context, parse
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
    "make_context": "parse",
    "parse": "parse",
}


def __getattr__(name: str) -> Any:
    if (home := _HOMES.get(name)) is not None:
        return getattr(importlib.import_module(f"fusegraph.compiler.{home}"), name)
    raise AttributeError(f"module 'fusegraph.compiler' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps `fusegraph.compiler.parse` the function (as the eager re-export did): importing
    the submodule of the same name would otherwise bind the module over it."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "parse" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
    "make_context",
    "parse",
]
