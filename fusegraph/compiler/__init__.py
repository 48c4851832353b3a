"""The IR core: the `fg` dialect's types, the Graph builder, dims, dtypes, devices, and
text IR (print with `str(graph)`, read with `parse`)."""

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.parse import make_context, parse
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.compiler.values import BufferValue, TensorValue, Value

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
