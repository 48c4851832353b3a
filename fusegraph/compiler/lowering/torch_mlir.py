"""Lowering to torch-mlir: fg IR -> FX (`to_fx`) -> core-aten FX (`make_fx`) -> MLIR.

The path is cheap on purpose (no `torch.export`, no `run_decompositions`):
1. mode="custom": `to_aten_fx(graph)` (`fx_direct.py`) builds the core-aten GraphModule op by
   op from the torch implementations (each distinct op traced once), with fake-tensor metadata
   (it falls back to steps 1'-2' for a graph holding an op whose impl cannot be traced alone).
1'. mode="decomposed": `to_fx(graph, mode, inplace=False)` builds the functional GraphModule.
2'. `make_fx(tracing_mode="symbolic")` with torch-mlir's decomposition table traces it on
   fake tensors whose symbolic dims are SymInts (one per dim name, shared across inputs)
   and whose static dims are ints, so the result is core aten with dynamic dims exactly
   where the IR has symbolic ones.
3. torch-mlir's `FxImporter` turns that into the `torch` dialect. With `inplace_buffers=True`
   each written buffer input (the KV blocks) is imported as a mutable `!torch.tensor`
   argument: the function reads it through `torch.copy.to_vtensor` and writes its final
   version back with `torch.overwrite.tensor.contents`, and does not return it, so IREE
   updates the caller's buffer in place (`import_fx`).
4. For `linalg-on-tensors`, `tosa` and `stablehlo`, torch-mlir's pipelines lower it further.

torch-mlir is imported inside the functions, so importing `fusegraph.compiler` never loads it.

Example:
    >>> m = to_torch_mlir(g, mode="custom")
    >>> print(m)                                   # the MLIR text
    >>> m.module                                   # the torch_mlir.ir.Module
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import torch

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.lowering.fx import to_fx
from fusegraph.compiler.lowering.fx_direct import to_aten_fx
from fusegraph.compiler.lowering.symbolic import trace_symbolic
from fusegraph.compiler.types import BufferType, shaped_type

__all__ = [
    "TorchMlirLoweringError",
    "TorchMlirModule",
    "buffer_outputs",
    "import_fx",
    "lower_module",
    "run_pipeline",
    "to_torch_mlir",
]

OutputTypeName = Literal["torch", "linalg-on-tensors", "tosa", "stablehlo"]
_MODES = ("custom", "decomposed")
_OUTPUT_TYPES = ("torch", "linalg-on-tensors", "tosa", "stablehlo")
# torch-mlir's own pipelines (torch_mlir.fx._module_lowering and compiler_utils.lower_mlir_module).
_TO_BACKEND = (
    "builtin.module(func.func(torch-match-quantized-custom-ops), "
    "torchdynamo-export-to-torch-backend-pipeline{ extra-library=})"
)
_BACKEND_PIPELINES = {
    "linalg-on-tensors": "builtin.module(torch-backend-to-linalg-on-tensors-backend-pipeline"
    "{allow-non-finites=true})",
    "tosa": "builtin.module(torch-backend-to-tosa-backend-pipeline)",
    "stablehlo": "builtin.module(torch-backend-to-stablehlo-backend-pipeline{allow-non-finites=true})",
}


class TorchMlirLoweringError(RuntimeError):
    """torch-mlir rejected the module. The message has torch-mlir's diagnostics, the saved
    input IR (`input_path`) and the `torch-mlir-opt` command that reproduces the failure."""

    def __init__(self, message: str, input_path: str, command: str) -> None:
        super().__init__(message)
        self.input_path = input_path
        self.command = command


@dataclass
class TorchMlirModule:
    """A lowered graph. `str(m)` is the MLIR text.

    Attributes:
        module: the `torch_mlir.ir.Module` (owns its `torch_mlir.ir.Context`).
        mode: "custom" or "decomposed".
        output_type: the dialect level of `module`.
        func_name: the name of the function holding the graph.
        fx_module: the core-aten GraphModule that was imported (emitted directly in
            "custom" mode, traced in "decomposed" mode).
        timings: seconds spent in each stage (`to_aten_fx` in "custom" mode, `to_fx` and
            `make_fx` in "decomposed" mode, then `import`, `lower`).
    """

    module: Any
    mode: str
    output_type: str
    func_name: str
    fx_module: torch.fx.GraphModule
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return str(self.module)

    @property
    def text(self) -> str:
        """The MLIR text (same as `str(self)`)."""
        return str(self.module)

    def argument_types(self) -> list[str]:
        """The MLIR types of the function's arguments, e.g. `!torch.vtensor<[?,64],f32>`."""
        func_op = self.module.body.operations[0]
        return [str(t) for t in func_op.type.inputs]


def to_torch_mlir(
    graph: Graph,
    mode: Literal["custom", "decomposed"] = "custom",
    output_type: OutputTypeName = "torch",
    dump_dir: str | os.PathLike[str] | None = None,
    dim_hints: Mapping[str, int] | None = None,
    inplace_buffers: bool = False,
    outputs_as_args: bool = False,
) -> TorchMlirModule:
    """Lower `graph` to a torch-mlir module.

    Args:
        graph: the graph; it is not modified.
        mode: "custom" keeps fused/quantized ops as `torch.operator "torch.fusegraph.<op>"`
            (functional forms); "decomposed" expands them to aten ops so torch-mlir's
            backend pipelines and IREE can compile the result.
        output_type: "torch" (the imported torch dialect), or a backend form reached with
            torch-mlir's pipelines: "linalg-on-tensors", "tosa" or "stablehlo".
        dump_dir: if given, write `<graph>.fx.py` (the traced FX code), `<graph>.torch.mlir`
            and `<graph>.<output_type>.mlir` there.
        dim_hints: example size per symbolic dim name, used only to trace (guards are
            evaluated on them); defaults to distinct sizes, `x_plus_1` = `x` + 1.
        inplace_buffers: import each written buffer input as a mutable `!torch.tensor`
            argument updated by `torch.overwrite.tensor.contents` (returning only the graph
            outputs); otherwise the function is functional and also returns the final
            version of every buffer input.
        outputs_as_args: with `inplace_buffers`, also write each graph output into a trailing
            mutable argument (caller-allocated, e.g. a torch CUDA tensor) and return nothing.

    Returns:
        A `TorchMlirModule`; symbolic dims are dynamic (`?`) in its function signature.

    Raises:
        ValueError: bad `mode`/`output_type`, or a symbolic dim that tracing specialized.
        TorchMlirLoweringError: a torch-mlir pipeline failed (carries the reproducer).
    """
    if mode not in _MODES:
        raise ValueError(f"to_torch_mlir: mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if output_type not in _OUTPUT_TYPES:
        raise ValueError(
            f"to_torch_mlir: output_type must be one of {', '.join(_OUTPUT_TYPES)}, got {output_type!r}"
        )
    timings: dict[str, float] = {}
    if mode == "custom":
        traced = _timed(timings, "to_aten_fx", to_aten_fx, graph, mode=mode, dim_hints=dim_hints)
    else:
        gm = _timed(timings, "to_fx", to_fx, graph, mode=mode, inplace=False)
        traced = _timed(timings, "make_fx", trace_symbolic, gm, graph, dim_hints)
    mutated = buffer_outputs(graph) if inplace_buffers else None
    if outputs_as_args and not inplace_buffers:
        raise ValueError("to_torch_mlir: outputs_as_args needs inplace_buffers=True")
    module = _timed(timings, "import", import_fx, traced, "main", mutated, outputs_as_args)
    result = TorchMlirModule(module, mode, output_type, "main", traced, timings)
    _check_dynamic_dims(result, graph)
    name = _file_stem(graph)
    if dump_dir is not None:
        _write(dump_dir, f"{name}.fx.py", traced.code)
        _write(dump_dir, f"{name}.torch.mlir", str(module))
    if output_type != "torch":
        _timed(timings, "lower", lower_module, module, output_type, dump_dir=dump_dir, name=name)
        if dump_dir is not None:
            _write(dump_dir, f"{name}.{output_type}.mlir", str(module))
    return result


def _timed(timings: dict[str, float], stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[stage] = time.perf_counter() - start
    return result


def buffer_outputs(graph: Graph) -> dict[int, int]:
    """Graph-input index of each buffer -> the position of its final version among the FX
    module's outputs (after the graph outputs, in input order; see `to_fx`)."""
    buffers = [a.index for a in graph.block.args if isinstance(a.type, BufferType)]
    return {index: len(graph.outputs) + k for k, index in enumerate(buffers)}


def import_fx(
    traced: torch.fx.GraphModule,
    func_name: str = "main",
    mutated: Mapping[int, int] | None = None,
    outputs_as_args: bool = False,
) -> Any:
    """Import a traced core-aten GraphModule with torch-mlir's FxImporter.

    Args:
        traced: the GraphModule (placeholders in argument order, a tuple output).
        func_name: the function's name.
        mutated: placeholder index -> output position of its final version. Each such input
            that the module writes becomes a mutable `!torch.tensor` argument, overwritten
            in place (`torch.overwrite.tensor.contents`) and dropped from the results; one
            it does not write stays an immutable argument and is dropped too.
        outputs_as_args: (with `mutated`) the graph outputs too are written into trailing
            mutable arguments, one per output, and nothing is returned.
    """
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras.fx_importer import FxImporter

    context = ir.Context()
    torch_d.register_dialect(context)
    importer = FxImporter(context=context)
    if mutated is None:
        importer.import_stateless_graph(traced.graph, func_name=func_name)
    else:
        program = _mutating_program(traced, mutated, outputs_as_args)
        importer.import_program(program, func_name=func_name)
    return importer.module


def _mutating_program(traced: torch.fx.GraphModule, mutated: Mapping[int, int], outputs_as_args: bool) -> Any:
    """The parts of an `ExportedProgram` that `FxImporter.import_program` reads, with user
    inputs mutated in place: it emits `torch.copy.to_vtensor` at the argument and
    `torch.overwrite.tensor.contents` where the final version is produced. With
    `outputs_as_args`, each graph output becomes one more trailing argument (`output_<k>`,
    appended to `traced`'s placeholders) that the function overwrites; it returns nothing."""
    from torch.export.graph_signature import (
        ExportGraphSignature,
        InputKind,
        InputSpec,
        OutputKind,
        OutputSpec,
        TensorArgument,
    )

    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    (output_node,) = [n for n in traced.graph.nodes if n.op == "output"]
    results = list(output_node.args[0])
    target_of = {position: placeholders[index] for index, position in mutated.items()}
    if outputs_as_args:
        buffers = set(target_of)
        for position, node in enumerate(results):
            if position not in buffers:
                with traced.graph.inserting_after(placeholders[-1]):
                    holder = traced.graph.placeholder(f"output_{position}")
                holder.meta.update({k: node.meta[k] for k in ("val", "tensor_meta") if k in node.meta})
                placeholders.append(holder)
                target_of[position] = holder
    inputs = [InputSpec(InputKind.USER_INPUT, TensorArgument(p.name), None) for p in placeholders]
    outputs = []
    for position, node in enumerate(results):
        if (target := target_of.get(position)) is None:
            outputs.append(OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(node.name), None))
        elif node is not target:  # an unwritten buffer is neither mutated nor returned
            outputs.append(OutputSpec(OutputKind.USER_INPUT_MUTATION, TensorArgument(node.name), target.name))
    signature = ExportGraphSignature(input_specs=inputs, output_specs=outputs)
    return SimpleNamespace(graph=traced.graph, graph_signature=signature, state_dict={}, constants={})


def lower_module(
    module: Any, output_type: str, dump_dir: str | os.PathLike[str] | None = None, name: str = "graph"
) -> None:
    """Run torch-mlir's pipelines on `module` in place: to the torch backend contract, then
    to `output_type`. A failure raises `TorchMlirLoweringError` with a reproducer."""
    run_pipeline(module, _TO_BACKEND, "torch -> torch backend IR", dump_dir, name)
    if output_type in _BACKEND_PIPELINES:
        run_pipeline(
            module, _BACKEND_PIPELINES[output_type], f"torch backend -> {output_type}", dump_dir, name
        )


def run_pipeline(
    module: Any, pipeline: str, description: str, dump_dir: str | os.PathLike[str] | None, name: str
) -> None:
    """Run one pass pipeline; on failure save the input IR and raise with the command and
    the MLIR diagnostics (collected by a handler, since they bypass Python's stderr)."""
    from torch_mlir.passmanager import PassManager

    before = module.operation.get_asm(enable_debug_info=True)
    diagnostics: list[str] = []
    with module.context as context:
        context.emit_error_diagnostics = True
        handler = context.attach_diagnostic_handler(lambda d: _collect(d, diagnostics))
        try:
            PassManager.parse(pipeline).run(module.operation)
            failure = None
        except Exception as err:  # noqa: BLE001 - MLIR raises a bare Exception subclass
            failure = err
        finally:
            handler.detach()
    if failure is not None:
        _raise_lowering_error(before, pipeline, description, dump_dir, name, diagnostics or [str(failure)])


def _collect(diagnostic: Any, into: list[str]) -> bool:
    notes = "".join(f"\n  note: {n.message}" for n in diagnostic.notes)
    into.append(f"{diagnostic.location}: {diagnostic.message}{notes}")
    return True


def _raise_lowering_error(
    before: str,
    pipeline: str,
    description: str,
    dump_dir: str | os.PathLike[str] | None,
    name: str,
    diagnostics: list[str],
) -> None:
    directory = dump_dir if dump_dir is not None else tempfile.mkdtemp(prefix="fusegraph-torch-mlir-")
    path = _write(directory, f"{name}.repro.mlir", before)
    command = f"torch-mlir-opt -pass-pipeline='{pipeline}' {path}"
    text = "\n".join(diagnostics)
    raise TorchMlirLoweringError(
        f"to_torch_mlir: {description} failed:\n{text}\ninput IR saved to {path}\nreproduce with:\n  {command}",
        input_path=path,
        command=command,
    )


def _check_dynamic_dims(result: TorchMlirModule, graph: Graph) -> None:
    """Every symbolic dim of an input must be `?` in the imported signature."""
    arg_types = result.argument_types()
    for i, arg in enumerate(graph.block.args):
        dims = _mlir_dims(arg_types[i])
        for axis, d in enumerate(shaped_type(arg).shape):
            if d.is_symbolic and dims is not None and dims[axis] != "?":
                raise ValueError(
                    f"to_torch_mlir: input {i} dim {axis} ({d.name!r}) was specialized to {dims[axis]} "
                    "while tracing; an op implementation turned it into a Python int"
                )


def _mlir_dims(type_text: str) -> list[str] | None:
    if (m := re.search(r"<\[([^\]]*)\]", type_text)) is None:
        return None
    return [s.strip() for s in m.group(1).split(",")] if m.group(1) else []


def _file_stem(graph: Graph) -> str:
    return re.sub(r"\W", "_", graph.name or "graph")


def _write(directory: str | os.PathLike[str], filename: str, text: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    with open(path, "w") as f:
        f.write(text)
    return path
