"""The fused ops as IREE CUDA custom dispatches: our Triton kernels inside the compiled module.

`to_torch_mlir(mode="custom")` keeps `fg.rope_split_store`, `fg.attention.paged` and
`fg.qmatmul.gptq` as `torch.operator "torch.fusegraph.<op>"`. `add_dispatches` replaces each
by a call to a private function that converts its tensors to builtin tensors
(`torch_c.to_builtin_tensor`) and launches the op's Triton kernel(s) with `flow.dispatch` on
a `hal.executable.source` whose one object is the kernel's PTX (`iree_dispatch_ptx`); the KV
cache is a tied operand, written in place. What stays torch (the weight concats, the
reshapes) IREE compiles itself. Kernels and configs (`iree_dispatch_ops.py`):

- `fg.rope_split_store`: `_rope_split_store_kernel`, one dispatch (rope, split, cache store).
- `fg.attention.paged`: `_paged_attention_kernel` with the decode tiles (BLOCK_M = 16/G rows,
  BLOCK_N = 128 keys, no key splitting), one dispatch; the batch is at most `max_batch`.
- `fg.qmatmul.gptq` (2/4/8 bits, no act-order, no clip): `_gptq_matmul_kernel`, the kernel our
  eager path runs at M = 17..32, tiled for `design_m` rows with split-K for `sms` SMs, then
  `_splitk_reduce_kernel` (two dispatches; one without split-K).

One module serves every batch size and `total_seq_len`: those are push constants and the
grid is computed from them. An op or attribute outside this list raises
`DispatchUnsupportedError` (`iree_compile.compile_graph` then compiles the decomposed form).

Example:
    >>> text = add_dispatches(to_torch_mlir(g, mode="custom", inplace_buffers=True).text, ptx_dir)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fusegraph.runtime.iree_dispatch_ptx import KernelPTX

__all__ = [
    "DispatchOptions",
    "DispatchUnsupportedError",
    "Emitted",
    "Launch",
    "Operator",
    "TensorArg",
    "add_dispatches",
    "builtin_type",
    "parse_operators",
    "torch_type",
]

_CONST = re.compile(r"^\s*(%[\w.$-]+) = torch\.constant\.(int|float|bool|str|none)(?: (.*?))?\s*$", re.M)
_OPERATOR = re.compile(
    r'^(\s*)(%[\w.$-]+)(?::(\d+))? = torch\.operator "torch\.fusegraph\.(\w+)"\((.*?)\) : \((.*?)\) -> (.*?)\s*$',
    re.M,
)
_VTENSOR = re.compile(r"!torch\.vtensor<\[([^\]]*)\],(\w+)>")
_ELEMENT = {"f16": "f16", "bf16": "bf16", "f32": "f32", "si32": "i32", "ui32": "i32", "si64": "i64"}


class DispatchUnsupportedError(ValueError):
    """An op (or an attribute of it) that has no custom dispatch; the message names it."""


@dataclass(frozen=True)
class DispatchOptions:
    """Module-wide kernel choices.

    Attributes:
        sms: streaming multiprocessors of the GPU (split-K fills them; H100/H200: 132).
        design_m: rows the GPTQ tiles are chosen for (the decode batch).
        max_batch: the most sequences one call may hold (the attention kernel's batch tile).
        arch: compute capability the PTX is compiled for (90).
    """

    sms: int = 132
    design_m: int = 32
    max_batch: int = 256
    arch: int = 90


@dataclass(frozen=True)
class TensorArg:
    """A tensor operand of an operator: its SSA name, dims (None: dynamic), torch dtype."""

    name: str
    dims: list[int | None]
    dtype: str


@dataclass
class Operator:
    """One `torch.operator "torch.fusegraph.<op>"` of the module text: its operands in order
    (a `TensorArg`, or a constant's Python value: int, float, bool, str or None)."""

    op: str
    args: list[object]
    results: list[tuple[list[int | None], str]]
    index: int  # its position among the module's operators (names its function)

    @property
    def tensors(self) -> list[TensorArg]:
        return [a for a in self.args if isinstance(a, TensorArg)]


@dataclass(frozen=True)
class Launch:
    """One kernel of an op: the count region's workload arguments and lines (ending in
    `hal.return`), and the pointer arguments the kernel writes (the others are read-only)."""

    kernel: KernelPTX
    workload: list[str]
    grid: list[str]
    written: frozenset[str]


@dataclass
class Emitted:
    """What an op builder returns: the private function's body and its launches."""

    body: list[str]
    launches: list[Launch] = field(default_factory=list)


def builtin_type(dims: list[int | None], dtype: str) -> str:
    """`tensor<?x512xf16>` for dims [None, 512] of torch dtype f16 (signless integers).

    Example:
        >>> builtin_type([None, 4], "ui32")
        'tensor<?x4xi32>'
    """
    if dtype not in _ELEMENT:
        raise DispatchUnsupportedError(f"iree_dispatch: element type {dtype} has no builtin form here")
    return "tensor<" + "".join(f"{'?' if d is None else d}x" for d in dims) + _ELEMENT[dtype] + ">"


def torch_type(dims: list[int | None], dtype: str) -> str:
    return "!torch.vtensor<[" + ",".join("?" if d is None else str(d) for d in dims) + f"],{dtype}>"


def _parse_vtensor(text: str) -> tuple[list[int | None], str]:
    m = _VTENSOR.fullmatch(text.strip())
    if m is None:
        raise DispatchUnsupportedError(f"iree_dispatch: not a value tensor type: {text}")
    dims = [None if d == "?" else int(d) for d in m.group(1).split(",")] if m.group(1) else []
    return dims, m.group(2)


def _split_types(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += 1 if c in "<[({" else -1 if c in ">])}" else 0
        if c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def _constants(text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, kind, raw in _CONST.findall(text):
        if kind == "int":
            values[name] = int(raw)
        elif kind == "float":
            values[name] = float(raw)
        elif kind == "bool":
            values[name] = raw == "true"
        elif kind == "str":
            values[name] = raw.strip('"')
        else:
            values[name] = None
    return values


def parse_operators(text: str) -> list[tuple[re.Match[str], Operator]]:
    """Every `torch.fusegraph.*` operator of the module text, with its match."""
    constants = _constants(text)
    found = []
    for index, m in enumerate(_OPERATOR.finditer(text)):
        names = [v.strip() for v in m.group(5).split(",") if v.strip()]
        types = _split_types(m.group(6))
        args: list[object] = []
        for name, typ in zip(names, types, strict=True):
            if typ.startswith("!torch.vtensor"):
                args.append(TensorArg(name, *_parse_vtensor(typ)))
            elif name in constants:
                args.append(constants[name])
            else:
                raise DispatchUnsupportedError(
                    f"iree_dispatch: {m.group(4)}: operand {name} ({typ}) is not a constant"
                )
        result_text = m.group(7).strip()
        result_types = _split_types(result_text[1:-1]) if result_text.startswith("(") else [result_text]
        results = [_parse_vtensor(t) for t in result_types]
        found.append((m, Operator(m.group(4), args, results, index)))
    return found


def add_dispatches(text: str, ptx_dir: str | os.PathLike[str], options: DispatchOptions | None = None) -> str:
    """The torch-dialect module `text` (from `to_torch_mlir(mode="custom")`) with every
    `torch.fusegraph.*` operator replaced by our kernels as IREE CUDA custom dispatches.

    Args:
        text: the module text.
        ptx_dir: where the kernels' PTX files are written (named by their content hash; the
            module refers to them by absolute path).
        options: kernel choices (`DispatchOptions()` by default).

    Returns:
        The module text, ready for `iree-compile --iree-input-type=torch` for CUDA.

    Raises:
        DispatchUnsupportedError: an operator (or an attribute) without a custom dispatch.
    """
    from fusegraph.runtime.iree_dispatch_ops import BUILDERS

    opts = options or DispatchOptions()
    directory = Path(ptx_dir)
    directory.mkdir(parents=True, exist_ok=True)
    pieces: list[str] = []
    functions: list[str] = []
    end = 0
    for m, op in parse_operators(text):
        builder = BUILDERS.get(op.op)
        if builder is None:
            raise DispatchUnsupportedError(
                f"iree_dispatch: no custom dispatch for fg op {op.op!r} (have {sorted(BUILDERS)})"
            )
        fname = f"fg_{op.op}_{op.index}"
        emitted = builder(op, fname, opts)
        args = [t.name for t in op.tensors]
        arg_types = [torch_type(t.dims, t.dtype) for t in op.tensors]
        res_types = [torch_type(d, t) for d, t in op.results]
        results = m.group(2) + (f":{m.group(3)}" if m.group(3) else "")
        pieces.append(text[end : m.start()])
        pieces.append(
            f"{m.group(1)}{results} = func.call @{fname}({', '.join(args)}) : ({', '.join(arg_types)}) -> "
            f"({', '.join(res_types)})"
        )
        end = m.end()
        signature = ", ".join(f"%a{i}: {t}" for i, t in enumerate(arg_types))
        functions.append(f"  func.func private @{fname}({signature}) -> ({', '.join(res_types)}) {{")
        functions.extend(f"    {line}" for line in emitted.body)
        functions.append("  }")
        for k, launch in enumerate(emitted.launches):  # the builders name launch k `{fname}_k{k}`
            functions.extend(_executable(f"{fname}_k{k}", launch, _write_ptx(directory, launch.kernel)))
    pieces.append(text[end:])
    out = "".join(pieces)
    close = out.rstrip().rfind("}")
    return out[:close] + "\n".join(functions) + "\n}\n"


def _write_ptx(directory: Path, kernel: KernelPTX) -> Path:
    digest = hashlib.sha256(kernel.ptx.encode()).hexdigest()[:16]
    path = (directory / f"{kernel.name}-{digest}.ptx").resolve()
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(kernel.ptx)
        os.replace(tmp, path)
    return path


def _executable(name: str, launch: Launch, ptx: Path) -> list[str]:
    """A `hal.executable.source` with the kernel's one export (its PTX the one object)."""
    kernel = launch.kernel
    bindings = ", ".join(
        "#hal.pipeline.binding<storage_buffer>"
        if b in launch.written
        else "#hal.pipeline.binding<storage_buffer, ReadOnly>"
        for b in kernel.bindings
    )
    wl = "".join(f", {w}: index" for w in launch.workload)
    local = f", workgroup_local_memory = {kernel.shared} : index" if kernel.shared else ""
    return [
        # generic form: `objects` is a property, which the custom form does not print in IREE 3.13
        f'  "hal.executable.source"() <{{sym_name = "{name}", sym_visibility = "private", objects = '
        f'#hal.executable.objects<{{#hal.executable.target<"cuda", "cuda-nvptx-fb"> = '
        f'[#hal.executable.object<{{path = "{ptx}"}}>]}}>}}> ({{',
        # generic form too: its workgroup size and shared memory are properties
        f'    "hal.executable.export"() <{{sym_name = "{kernel.name}", sym_visibility = "public", ordinal = 0 : index, '
        f"layout = #hal.pipeline.layout<constants = {len(kernel.constants)}, bindings = [{bindings}]>, "
        f"workgroup_size = [{kernel.threads} : index, 1 : index, 1 : index]{local}}}> ({{",
        f"    ^bb0(%device: !hal.device{wl}):",
        *(f"      {line}" for line in launch.grid),
        "    }, {",
        "    }) : () -> ()",
        "    hal.executable.source_end",
        "  }) : () -> ()",
    ]
