"""Compile an in-place module without IREE's whole-buffer copies.

torch-mlir's `torch.overwrite.tensor.contents` on a mutable argument becomes, in IREE's torch
input conversion, a `hal.tensor.import` of the argument at entry and a `hal.tensor.alias`
of its final version to the argument at exit (the writes run in the argument's storage).
The import does not `consume` the argument: IREE treats its storage as borrowed from the
caller, and since iree-base-compiler 3.13 (IREE #22844, "Preserve borrowed imports during
copy elision") `--iree-stream-elide-async-copies` keeps every copy-on-write clone whose
source chain reaches a borrowed import and whose clone is then written. In a module that
writes the cache in place this leaves, per call:
- one layer: a clone of the final cache for the entry `hal.tensor.barrier` (unused, but the
  alias that feeds it writes the borrowed storage);
- several layers: in addition, a clone of the cache before the second layer's store, made
  because layer 1's attention reads the version layer 2's store overwrites (a copy-on-write
  fork). The scatters then write the clone and the result is copied back.
Each is a whole-cache device copy: 256 MiB per call for one Llama-3-8B layer at bs 32, ctx
2048, and one more per layer.

The caller hands the buffer over for the call (`IreeCompiledGraph` passes the cache tensor and
reads it only after the call returns), so the import may `consume` it: IREE then owns the
storage and elides those clones by its own last-use analysis (a clone whose source has no
later reader), which leaves no whole-cache copy for one layer or many.
`consume_safe(graph)` additionally requires that every read of a buffer version that is
later overwritten be ordered before the overwrite by data dependence (layer L's attention
feeds layer L+1's projections, hence its store), so that no schedule IREE picks can let a
write of layer L+1 reach a read of layer L. `compile_inplace` compiles to IREE's input level,
marks the imports of the arguments the module writes in place `consume`, and compiles on from
there; if no such import is found it compiles the module unchanged.

`iree_compile.compile_graph(graph, flags)` lowers and compiles a graph the way
`IreeCompiledGraph` runs it, through `compile_inplace` when `consume_safe(graph)`.

Example:
    >>> binary, consumed = compile_inplace(mlir_text, target_flags("cpu"))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.types import BufferType

__all__ = [
    "compile_inplace",
    "consume_safe",
    "mark_consumed",
    "stage_inplace",
]

_log = logging.getLogger(__name__)

# `hal.tensor.alias [wait(%f) =>] %value : tensor<...> to %argN : !hal.buffer_view`
_ALIAS_TARGET = re.compile(r"^\s*%[\w.$-]+ = hal\.tensor\.alias .* to (%[\w.$-]+) : !hal\.buffer_view", re.M)
# `%x = hal.tensor.import [on(...)] [wait(%f) =>] [consume] %argN ...` (HALOps.td's format)
_IMPORT = re.compile(
    r"^(\s*%[\w.$-]+ = hal\.tensor\.import (?:on\(.*?\) )?(?:wait\(%[\w.$-]+\) => )?)(consume )?(%[\w.$-]+)\b",
    re.M,
)


def consume_safe(graph: Graph) -> bool:
    """Whether IREE may own the graph's written buffers for the call (see the module
    docstring): some buffer is written, each buffer version is overwritten by at most one op,
    and every other op that reads a version is an ancestor of the op that overwrites it.

    Example:
        >>> consume_safe(gptq_attention_graph(2))   # layer 0's attention feeds layer 1's store
        True
    """
    values: list[SSAValue] = [*graph.block.args, *(r for op in graph.block.ops for r in op.results)]
    written = False
    for value in values:
        if not isinstance(value.type, BufferType):
            continue
        users = list(dict.fromkeys(use.operation for use in value.uses))
        writers = [u for u in users if any(isinstance(r.type, BufferType) for r in u.results)]
        if not writers:
            continue
        if len(writers) > 1:
            return False  # a fork: two next versions of one buffer
        written = True
        before = _ancestors(writers[0].operands)
        if any(u is not writers[0] and not any(r in before for r in u.results) for u in users):
            return False
    return written


def _ancestors(values: Sequence[SSAValue]) -> set[SSAValue]:
    seen: set[SSAValue] = set()
    stack = list(values)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if isinstance(owner := v.owner, Operation):  # not a block argument
            stack.extend(owner.operands)
    return seen


def mark_consumed(text: str) -> tuple[str, list[str]]:
    """IREE input-level IR with every `hal.tensor.import` of an argument that a
    `hal.tensor.alias` writes marked `consume`.

    Returns:
        The text and the arguments whose imports were marked (sorted; empty: nothing to mark,
        the text unchanged).

    Example:
        >>> mark_consumed("%9 = hal.tensor.import wait(%arg6) => %arg2 : ...\\n"
        ...               "%5 = hal.tensor.alias wait(%arg6) => %4 : tensor<8xf32> to %arg2 : !hal.buffer_view")[1]
        ['%arg2']
    """
    targets = set(_ALIAS_TARGET.findall(text))
    marked: set[str] = set()

    def mark(m: re.Match[str]) -> str:
        prefix, consumed, source = m.groups()
        if source not in targets or consumed:
            return m.group(0)
        marked.add(source)
        return f"{prefix}consume {source}"

    return _IMPORT.sub(mark, text), sorted(marked)


def stage_inplace(mlir_text: str, flags: Sequence[str]) -> tuple[str, list[str]]:
    """A torch-dialect in-place module compiled to IREE's input level, with the imports of
    the arguments it writes in place marked `consume` (`mark_consumed`).

    Returns:
        The input-level text and the consumed arguments.

    Raises:
        iree.compiler.tools.binaries.CompilerToolError: iree-compile failed.
    """
    import iree.compiler as ireec

    staged = ireec.compile_str(
        mlir_text, input_type="torch", target_backends=[], extra_args=[*flags, "--compile-to=input"]
    )
    return mark_consumed(staged.decode() if isinstance(staged, bytes) else str(staged))


def compile_inplace(mlir_text: str, flags: Sequence[str]) -> tuple[bytes, bool]:
    """iree-compile a torch-dialect in-place module whose graph is `consume_safe`, with its
    written arguments consumed by the entry (see the module docstring).

    Returns:
        The `.vmfb` bytes, and whether any import was marked (False: compiled as is).

    Raises:
        iree.compiler.tools.binaries.CompilerToolError: iree-compile failed.
    """
    import iree.compiler as ireec

    text, consumed = stage_inplace(mlir_text, flags)
    if not consumed:
        _log.warning("compile_inplace: no import of an argument written in place found; compiled unchanged")
        return ireec.compile_str(
            mlir_text, input_type="torch", target_backends=[], extra_args=list(flags)
        ), False
    return ireec.compile_str(text, target_backends=[], extra_args=[*flags, "--compile-from=input"]), True
