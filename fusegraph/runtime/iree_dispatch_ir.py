"""The IR side of `iree_dispatch`: reading the `torch.fusegraph.*` operators of a torch-dialect
module (`parse_operators`), the types the op builders (`iree_dispatch_ops`) use, and the
`hal.executable.source` text of one kernel (`executable`).

Example:
    >>> [op.op for _, op in parse_operators(text)]   # ['qmatmul_gptq', 'rope_split_store', ...]
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
    "Guard",
    "Launch",
    "Operator",
    "TensorArg",
    "builtin_type",
    "concatenated_pieces",
    "executable",
    "parse_operators",
    "torch_type",
    "write_ptx",
]

_CONST = re.compile(r"^\s*(%[\w.$-]+) = torch\.constant\.(int|float|bool|str|none)(?: (.*?))?\s*$", re.M)
_OPERATOR = re.compile(
    r'^(\s*)(%[\w.$-]+)(?::(\d+))? = torch\.operator "torch\.fusegraph\.(\w+)"\((.*?)\) : \((.*?)\) -> (.*?)\s*$',
    re.M,
)
_LIST = re.compile(
    r"^\s*(%[\w.$-]+) = torch\.prim\.ListConstruct (.*?) : \((.*?)\) -> !torch\.list<vtensor>\s*$", re.M
)
_CAT = re.compile(
    r"^\s*(%[\w.$-]+) = torch\.aten\.cat (%[\w.$-]+), (%[\w.$-]+) : !torch\.list<vtensor>, !torch\.int -> .*$",
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


@dataclass(frozen=True)
class Guard:
    """A host-side check of the call (`cf.assert`, before any launch of the module when the
    operand is an argument of the entry): `dim(operand, axis) <predicate> bound` (`arith.cmpi`
    predicate on index values), else the call fails with `message`."""

    operand: int
    axis: int
    predicate: str
    bound: int
    message: str


@dataclass
class Emitted:
    """What an op builder returns: the private function's body, its launches, its guards."""

    body: list[str]
    launches: list[Launch] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)


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


def write_ptx(directory: Path, kernel: KernelPTX) -> Path:
    digest = hashlib.sha256(kernel.ptx.encode()).hexdigest()[:16]
    path = (directory / f"{kernel.name}-{digest}.ptx").resolve()
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(kernel.ptx)
        os.replace(tmp, path)
    return path


def executable(name: str, launch: Launch, ptx: Path) -> list[str]:
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


def guard_function(name: str, op: Operator, guards: list[Guard]) -> tuple[list[int], list[str]]:
    """(the operands it takes, the lines of `func.func private @name`) checking `guards`."""
    used = sorted({g.operand for g in guards})
    tensors = op.tensors
    sig = ", ".join(f"%a{i}: {torch_type(tensors[i].dims, tensors[i].dtype)}" for i in used)
    lines = [f"  func.func private @{name}({sig}) {{"]
    for i in used:
        t = tensors[i]
        lines.append(
            f"    %b{i} = torch_c.to_builtin_tensor %a{i} : {torch_type(t.dims, t.dtype)} -> {builtin_type(t.dims, t.dtype)}"
        )
    for k, g in enumerate(guards):
        t = tensors[g.operand]
        lines += [
            f"    %axis{k} = arith.constant {g.axis} : index",
            f"    %dim{k} = tensor.dim %b{g.operand}, %axis{k} : {builtin_type(t.dims, t.dtype)}",
            f"    %bound{k} = arith.constant {g.bound} : index",
            f"    %ok{k} = arith.cmpi {g.predicate}, %dim{k}, %bound{k} : index",
            f'    cf.assert %ok{k}, "{g.message}"',
        ]
    return used, [*lines, "    return", "  }"]


def concatenated_pieces(text: str, op: Operator) -> Operator | None:
    """For a GPTQ operator whose qweight, scales and qzeros are each `torch.aten.cat` of the
    same number of tensors along N (what `fuse-qkv-projections` leaves), the operator
    `qmatmul_gptq_pieces` on the pieces (`x, qw_1, s_1, qz_1, ..., qw_p, s_p, qz_p`, then the
    GPTQ attributes); None when the pattern is not there exactly."""
    if (
        op.op != "qmatmul_gptq"
        or len(op.args) != 10
        or not all(isinstance(a, TensorArg) for a in op.args[1:4])
    ):
        return None
    constants = _constants(text)
    lists = {name: (items, types) for name, items, types in _LIST.findall(text)}
    cats = {name: (lst, dim) for name, lst, dim in _CAT.findall(text)}
    pieces: list[list[TensorArg]] = []
    for arg in op.args[1:4]:
        assert isinstance(arg, TensorArg)
        found = cats.get(arg.name)
        if found is None or found[0] not in lists or constants.get(found[1]) not in (1, -1):
            return None
        items, types = lists[found[0]]
        names = [v.strip() for v in items.split(",")]
        pieces.append(
            [TensorArg(n, *_parse_vtensor(t)) for n, t in zip(names, _split_types(types), strict=True)]
        )
    if len({len(p) for p in pieces}) != 1 or len(pieces[0]) < 2:
        return None
    bits = op.args[5]
    pack = 32 // bits if isinstance(bits, int) and bits in (2, 4, 8) else 0
    for qw, sc, qz in zip(*pieces, strict=True):  # each piece one projection's (qweight, scales, qzeros)
        if (
            qw.dims[1] is None
            or qw.dims[1] != sc.dims[1]
            or qz.dims[1] is None
            or qz.dims[1] * pack != qw.dims[1]
        ):
            return None
    flat: list[object] = [op.args[0]]
    for qw, sc, qz in zip(*pieces, strict=True):
        flat += [qw, sc, qz]
    return Operator("qmatmul_gptq_pieces", [*flat, *op.args[4:]], op.results, op.index)
