"""Triton kernels as PTX for IREE's CUDA custom dispatches (`iree_dispatch.py` declares them).

IREE's CUDA ABI for a hand-written kernel (iree-base-compiler/runtime 3.13, samples/
custom_dispatch/cuda): the kernel's parameters are the dispatch's bindings (one device
pointer each, operands then untied results, in order), then its push constants (32-bit
each); the block size is the export's `workgroup_size`. A Triton kernel differs in three
ways, which `triton_ptx` resolves on the PTX text, checking each step:

- **Arguments.** Every argument that is fixed for a module (shapes, strides, layer index,
  flags) is compiled in as a constexpr; the rest (`dynamic`) stay parameters. Triton appends
  two pointers (global and profile scratch). Each parameter the body never names
  (Triton loads each with `ld.param`) is removed from the entry, so the ABI is exactly the loaded ones; those must be
  pointers first, then 32-bit scalars (a kernel whose order differs is refused).
- **Shared memory.** Triton declares `.extern .shared global_smem[]`, sized at launch. IREE's
  CUDA runtime passes the export's `workgroup_local_memory` as the launch's dynamic shared
  memory, so the size (`KernelPTX.shared`) goes there (`iree_dispatch`).
- **PTX version.** Triton 3.9 writes PTX ISA 9.x; the kernels ask for `PTX_VERSION` (8.4:
  CUDA 12.4 and later drivers JIT it).

Triton compiles for sm_90 on a machine without a GPU (`GPUTarget("cuda", 90, 32)`).

Example:
    >>> k = triton_ptx(_kernel, {"x_ptr": "*fp16", "n": "i32"}, {"BLOCK": 128}, num_warps=4)
    >>> k.params                                  # [('x_ptr', '*fp16'), ('n', 'i32')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["PTX_VERSION", "KernelPTX", "entry_params", "triton_ptx"]

PTX_VERSION = 84
_ENTRY = re.compile(r"\.visible \.entry (\w+)\(\s*(.*?)\s*\)", re.S)
_PARAM = re.compile(r"\.param \.(u64|u32|b32|f32|s32)\b.*?\s(\w+)$")


@dataclass(frozen=True)
class KernelPTX:
    """One kernel as IREE dispatches it.

    Attributes:
        name: the PTX entry name (the export's name).
        ptx: the PTX text.
        params: the entry's parameters in order: (Triton argument name, Triton type), e.g.
            ("q_ptr", "*fp16"), ("B", "i32"): pointers first, then 32-bit scalars.
        threads: the block size (num_warps · 32).
        shared: bytes of dynamic shared memory per block.
    """

    name: str
    ptx: str
    params: tuple[tuple[str, str], ...]
    threads: int
    shared: int

    @property
    def bindings(self) -> list[str]:
        """The pointer parameters (IREE bindings), in order."""
        return [n for n, t in self.params if t.startswith("*")]

    @property
    def constants(self) -> list[str]:
        """The scalar parameters (IREE push constants), in order."""
        return [n for n, t in self.params if not t.startswith("*")]


def entry_params(ptx: str) -> tuple[str, list[tuple[str, str]]]:
    """(entry name, [(PTX type, param name)]) of the PTX's one `.visible .entry`.

    Example:
        >>> entry_params(ptx)   # ('k', [('u64', 'k_param_0'), ('u32', 'k_param_1')])
    """
    entries = _ENTRY.findall(ptx)
    if len(entries) != 1:
        raise ValueError(f"iree_dispatch: expected one .visible .entry in the PTX, found {len(entries)}")
    name, body = entries[0]
    params = []
    for line in (p.strip() for p in body.split(",") if p.strip()):
        if (m := _PARAM.search(line)) is None:
            raise ValueError(f"iree_dispatch: kernel {name}: unsupported PTX parameter {line!r}")
        params.append((m.group(1), m.group(2)))
    return name, params


def triton_ptx(
    fn: Any,
    dynamic: dict[str, str],
    constexprs: dict[str, Any],
    num_warps: int = 4,
    num_stages: int = 3,
    arch: int = 90,
) -> KernelPTX:
    """Compile Triton kernel `fn` to PTX for an IREE custom dispatch (see the module docstring).

    Args:
        fn: the `@triton.jit` kernel.
        dynamic: the arguments passed at run time, name -> Triton type ("*fp16", "*i32",
            "i32", ...). Pointers are declared 16-byte aligned (IREE's buffers are).
        constexprs: every other argument, name -> value (None for an unused pointer).
        num_warps, num_stages: Triton's launch options.
        arch: the compute capability (90: sm_90).

    Returns:
        The `KernelPTX`, with only the parameters the kernel loads.

    Raises:
        ValueError: an argument is in neither dict, or the loaded parameters are not
            pointers-then-scalars, or Triton needs scratch memory.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    if not isinstance(fn, JITFunction):  # e.g. decorated while TRITON_INTERPRET=1 was set
        raise ValueError(f"iree_dispatch: {fn!r} is not a compiled Triton kernel (JITFunction)")
    names = list(fn.arg_names)
    missing = [n for n in names if n not in dynamic and n not in constexprs]
    if missing:
        raise ValueError(
            f"iree_dispatch: {fn.__name__}: arguments {missing} are neither dynamic nor constexpr"
        )
    signature = {n: dynamic.get(n, "constexpr") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, t in dynamic.items() if t.startswith("*")}
    source = ASTSource(
        fn, signature, constexprs={n: constexprs[n] for n in names if n not in dynamic}, attrs=attrs
    )
    options = {"num_warps": num_warps, "num_stages": num_stages, "ptx_version": PTX_VERSION}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    meta = compiled.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise ValueError(f"iree_dispatch: {fn.__name__} needs Triton scratch memory (IREE cannot pass it)")
    ptx, params = _strip_unused_params(compiled.asm["ptx"], [n for n in names if n in dynamic], dynamic)
    return KernelPTX(meta.name, ptx, tuple(params), meta.num_warps * 32, meta.shared)


def _strip_unused_params(
    ptx: str, dynamic_order: list[str], types: dict[str, str]
) -> tuple[str, list[tuple[str, str]]]:
    """The PTX with the parameters its body never loads removed from the entry, and the kept
    ones as (argument name, type). Triton's params are the dynamic arguments in order, then
    the two scratch pointers."""
    name, declared = entry_params(ptx)
    labels = [*dynamic_order, "global_scratch", "profile_scratch"]
    if len(declared) != len(labels):
        raise ValueError(f"iree_dispatch: {name}: {len(declared)} PTX params for arguments {labels}")
    match = _ENTRY.search(ptx)
    assert match is not None  # entry_params found it
    body = ptx[match.end() :]  # a parameter is used where its name appears past the entry
    loaded = {p for _t, p in declared if re.search(rf"\b{p}\b", body)}
    kept = [(label, p) for label, (_t, p) in zip(labels, declared, strict=True) if p in loaded]
    if any(label in ("global_scratch", "profile_scratch") for label, _ in kept):
        raise ValueError(f"iree_dispatch: {name} loads a Triton scratch pointer")
    params = [(label, types[label]) for label, _ in kept]
    kinds = ["ptr" if t.startswith("*") else "scalar" for _, t in params]
    if kinds != sorted(kinds):  # "ptr" < "scalar": all pointers before all scalars
        raise ValueError(f"iree_dispatch: {name}: parameters {params} are not pointers then scalars")
    if any(t not in ("i32", "fp32") and not t.startswith("*") for _, t in params):
        raise ValueError(f"iree_dispatch: {name}: only 32-bit scalar parameters pass as constants: {params}")
    lines = [line.strip().rstrip(",") for line in match.group(2).split("\n") if line.strip()]
    keep_names = {p for _, p in kept}
    kept_lines = [line for line in lines if line.split()[-1] in keep_names]
    entry = f".visible .entry {name}(\n\t" + ",\n\t".join(kept_lines) + "\n)"
    return ptx[: match.start()] + entry + ptx[match.end() :], params
