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

import os
import re
from pathlib import Path

from fusegraph.runtime.iree_dispatch_ir import (
    DispatchOptions,
    DispatchUnsupportedError,
    concatenated_pieces,
    executable,
    guard_function,
    parse_operators,
    torch_type,
    write_ptx,
)
from fusegraph.runtime.iree_dispatch_ops import BUILDERS

__all__ = ["DispatchOptions", "DispatchUnsupportedError", "add_dispatches"]

_ENTRY_ARG = re.compile(r"%arg\d+")
_ENTRY_FUNC = re.compile(r"^\s*func\.func @main\(.*\{[ \t]*\n", re.M)


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
    opts = options or DispatchOptions()
    directory = Path(ptx_dir)
    directory.mkdir(parents=True, exist_ok=True)
    pieces: list[str] = []
    functions: list[str] = []
    entry_calls: list[str] = []
    end = 0
    for m, found in parse_operators(text):
        op = concatenated_pieces(text, found) or found  # weights concatenated by a pass: a matmul per piece
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
        # guards of entry arguments run at the entry, before any launch; the others before the op
        at_entry = [g for g in emitted.guards if _ENTRY_ARG.fullmatch(op.tensors[g.operand].name)]
        here = [g for g in emitted.guards if g not in at_entry]
        for suffix, guards in (("entry_guard", at_entry), ("guard", here)):
            if not guards:
                continue
            used, lines = guard_function(f"{fname}_{suffix}", op, guards)
            functions.extend(lines)
            types = ", ".join(torch_type(op.tensors[i].dims, op.tensors[i].dtype) for i in used)
            call = f"func.call @{fname}_{suffix}({', '.join(op.tensors[i].name for i in used)}) : ({types}) -> ()"
            if guards is at_entry:
                entry_calls.append(call)
            else:
                pieces.append(f"{m.group(1)}{call}\n")
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
            functions.extend(executable(f"{fname}_k{k}", launch, write_ptx(directory, launch.kernel)))
    pieces.append(text[end:])
    out = "".join(pieces)
    if entry_calls:
        entry = _ENTRY_FUNC.search(out)
        if entry is None:
            raise DispatchUnsupportedError(
                "iree_dispatch: no `func.func @main(...) {` line to put the guards in"
            )
        out = out[: entry.end()] + "".join(f"    {c}\n" for c in entry_calls) + out[entry.end() :]
    close = out.rstrip().rfind("}")
    return out[:close] + "\n".join(functions) + "\n}\n"
