"""The per-op custom dispatches of `iree_dispatch.py`: which Triton kernel, compiled how, with
which grid, for `fg.rope_split_store`, `fg.attention.paged` and `fg.qmatmul.gptq`.

Each builder gets the `Operator` (its tensor types and constant attributes) and returns the
body of a private function `(torch tensors) -> (torch results)`: `torch_c.to_builtin_tensor`
on the arguments, `tensor.dim` for the dynamic sizes, `flow.dispatch` per kernel (push
constants are i32, the KV cache a tied operand), `torch_c.from_builtin_tensor` on the results.
The kernels' fixed arguments (shapes, strides, attributes) are compiled in as constexprs.

Example:
    >>> emitted = BUILDERS["rope_split_store"](op, "fg_rope_split_store_1", DispatchOptions())
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fusegraph.runtime.iree_dispatch_ir import (
    DispatchOptions,
    DispatchUnsupportedError,
    Emitted,
    Guard,
    Launch,
    Operator,
    TensorArg,
    builtin_type,
    torch_type,
)
from fusegraph.runtime.iree_dispatch_ptx import KernelPTX, triton_ptx

__all__ = ["BUILDERS"]

_TRITON = {"f16": "fp16", "bf16": "bf16", "f32": "fp32", "si32": "i32", "ui32": "i32"}
_LOG2E = 1.4426950408889634
_FG_NAMES = {"paged_attention": "fg.attention.paged", "qmatmul_gptq": "fg.qmatmul.gptq",
             "rope_split_store": "fg.rope_split_store"}  # fmt: skip
Value = tuple[str, str, list[str]]  # (SSA name, builtin tensor type, its dynamic dims as index values)


def _ptr(t: TensorArg) -> str:
    return "*" + _TRITON[t.dtype]


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _int(value: object, op: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DispatchUnsupportedError(f"iree_dispatch: {op}: {name} must be an int constant, got {value!r}")
    return value


def _float(value: object, op: str, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DispatchUnsupportedError(f"iree_dispatch: {op}: {name} must be a number, got {value!r}")
    return float(value)


@lru_cache(maxsize=64)
def _compile(kernel: str, dynamic: tuple[tuple[str, str], ...], constexprs: tuple[tuple[str, Any], ...],
             num_warps: int, num_stages: int, arch: int) -> KernelPTX:  # fmt: skip
    from fusegraph.runtime.kernels import gptq_kernels, paged_attention, rope_split_store

    fns = {
        "rope_split_store": rope_split_store._rope_split_store_kernel,
        "paged_attention": paged_attention._paged_attention_kernel,
        "gptq_matmul": gptq_kernels._gptq_matmul_kernel,
        "splitk_reduce": gptq_kernels._splitk_reduce_kernel,
    }
    return triton_ptx(fns[kernel], dict(dynamic), dict(constexprs), num_warps, num_stages, arch)


def _kernel(kernel: str, dynamic: dict[str, str], constexprs: dict[str, Any], opts: DispatchOptions,
            num_warps: int = 4, num_stages: int = 3) -> KernelPTX:  # fmt: skip
    return _compile(
        kernel, tuple(dynamic.items()), tuple(constexprs.items()), num_warps, num_stages, opts.arch
    )


class _Body:
    """The lines of a private function body, with de-duplicated index constants and dims."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.lines: list[str] = []
        self.values: dict[str, str] = {}
        self.tensors = op.tensors
        self.launches: list[Launch] = []
        self.guards: list[Guard] = []
        for i, t in enumerate(self.tensors):
            self.lines.append(
                f"%b{i} = torch_c.to_builtin_tensor %a{i} : {torch_type(t.dims, t.dtype)} -> {builtin_type(t.dims, t.dtype)}"
            )

    def _new(self, key: str, line: str) -> str:
        if key not in self.values:
            name = f"%v{len(self.values)}"
            self.values[key] = name
            self.lines.append(f"{name} = {line}")
        return self.values[key]

    def index(self, n: int) -> str:
        return self._new(f"c{n}", f"arith.constant {n} : index")

    def dim(self, i: int, axis: int) -> str:
        """Dim `axis` of tensor operand `i` as an index value."""
        t = self.tensors[i]
        size = t.dims[axis]
        if size is not None:
            return self.index(size)
        return self._new(
            f"d{i}.{axis}", f"tensor.dim %b{i}, {self.index(axis)} : {builtin_type(t.dims, t.dtype)}"
        )

    def arith(self, op: str, a: str, b: str) -> str:
        return self._new(f"{op}({a},{b})", f"arith.{op} {a}, {b} : index")

    def i32(self, value: str) -> str:
        return self._new(f"i32({value})", f"arith.index_cast {value} : index to i32")

    def nonempty(self, operand: int) -> None:
        """CUDA refuses a launch of zero blocks: a call whose `operand` has 0 rows is refused by name."""
        name = _FG_NAMES.get(self.op.op, self.op.op)
        self.guards.append(
            Guard(operand, 0, "ugt", 0, f"iree_dispatch: {name}: a call with 0 rows has no launch")
        )

    def operand(self, i: int) -> Value:
        """Tensor operand `i` as (builtin value, type, its dynamic dims)."""
        t = self.tensors[i]
        return (
            f"%b{i}",
            builtin_type(t.dims, t.dtype),
            [self.dim(i, a) for a, d in enumerate(t.dims) if d is None],
        )

    def dispatch(
        self,
        name: str,
        launch: Launch,
        workload: list[str],
        constants: dict[str, str],
        operands: dict[str, Value],
        results: dict[str, Value | str],
    ) -> list[Value]:
        """A `flow.dispatch` of `launch`. `constants`: the kernel's scalar parameters -> index
        values; `operands`: its read pointers -> values; `results`: its written pointers ->
        a new result (value name ignored) or the name of the operand it is tied to (written in
        place). Bindings are the operands then the new results, in the kernel's order."""
        kernel = launch.kernel
        new = [n for n, r in results.items() if not isinstance(r, str)]
        expected = [n for n in kernel.bindings if n in operands] + [n for n in kernel.bindings if n in new]
        if expected != kernel.bindings or len(expected) != len(operands) + len(new):
            raise DispatchUnsupportedError(
                f"iree_dispatch: {kernel.name}: PTX bindings {kernel.bindings} != operands {list(operands)} + "
                f"results {new}"
            )
        if sorted(constants) != sorted(kernel.constants):
            raise DispatchUnsupportedError(
                f"iree_dispatch: {kernel.name}: PTX constants {kernel.constants} != {list(constants)}"
            )
        args = [self.i32(constants[n]) for n in kernel.constants]
        types = ["i32"] * len(args)
        for n in [b for b in kernel.bindings if b in operands]:
            value, typ, dyn = operands[n]
            args.append(value)
            types.append(typ + _dims(dyn))
        outs, values = [], []
        single = len(results) == 1
        for k, r in enumerate(results.values()):
            ssa = f"%{name}" if single else f"%{name}#{k}"
            if isinstance(r, str):
                value, typ, dyn = operands[r]
                outs.append(value + _dims(dyn))
            else:
                _, typ, dyn = r
                outs.append(typ + _dims(dyn))
            values.append((ssa, typ, dyn))
        res = f"%{name}" if single else f"%{name}:{len(results)}"
        self.lines.append(
            f"{res} = flow.dispatch @{name}::@{kernel.name}[{', '.join(workload)}]({', '.join(args)}) : "
            f"({', '.join(types)}) -> ({', '.join(outs)})"
        )
        self.launches.append(launch)
        return values

    def finish(self, values: list[Value]) -> Emitted:
        """Convert `values` (in `op.results` order) back to torch and return them."""
        outs = []
        for k, ((value, _t, _d), (dims, dtype)) in enumerate(zip(values, self.op.results, strict=True)):
            self.lines.append(
                f"%o{k} = torch_c.from_builtin_tensor {value} : {builtin_type(dims, dtype)} -> {torch_type(dims, dtype)}"
            )
            outs.append(f"%o{k}")
        types = ", ".join(torch_type(d, t) for d, t in self.op.results)
        self.lines.append(f"return {', '.join(outs)} : {types}")
        return Emitted(self.lines, self.launches, self.guards)


def _dims(dyn: list[str]) -> str:
    return f"{{{', '.join(dyn)}}}" if dyn else ""


def _grid(x: str, y: int | str = 1, z: int | str = 1, setup: tuple[str, ...] = ()) -> list[str]:
    """Count-region lines: `setup`, then constants for the int extents, then `hal.return`."""
    lines = list(setup)
    vals = []
    for i, e in enumerate((x, y, z)):
        if isinstance(e, int):
            lines.append(f"%g{i} = arith.constant {e} : index")
            vals.append(f"%g{i}")
        else:
            vals.append(e)
    return [*lines, f"hal.return {', '.join(vals)} : index, index, index"]


def _kv_strides(kv: TensorArg, op: str) -> dict[str, int]:
    if len(kv.dims) != 6 or any(d is None for d in kv.dims):
        raise DispatchUnsupportedError(
            f"iree_dispatch: {op}: kv_blocks must be 6-D and static, got {kv.dims}"
        )
    dims = [int(d) for d in kv.dims if d is not None]
    strides = [math.prod(dims[i + 1 :]) for i in range(6)]
    return {f"s_kv{i}": s for i, s in enumerate(strides)}


def rope_split_store(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.rope_split_store` -> `_rope_split_store_kernel`, the cache tied (written in place)."""
    qkv, ro, freqs, kv, lens, lut = op.tensors
    layer_idx, interleaved, n_heads, n_kv_heads, head_dim, long_after, ntk = op.args[6:]
    if long_after is not None or ntk is not None:
        raise DispatchUnsupportedError(
            "iree_dispatch: rope_split_store: longrope/dynamic NTK have no custom dispatch yet"
        )
    h, hkv, d = (
        _int(v, op.op, f)
        for v, f in ((n_heads, "n_heads"), (n_kv_heads, "n_kv_heads"), (head_dim, "head_dim"))
    )
    rows, rotary = freqs.dims
    if rows is None or rotary is None or qkv.dims[1] is None:
        raise DispatchUnsupportedError(
            f"iree_dispatch: rope_split_store: freqs_cis/qkv widths must be static: {freqs.dims}"
        )
    n_total = h + 2 * hkv
    block_d = _pow2(d)
    block_h = max(1, min(_pow2(n_total), 2048 // block_d))
    const = {"layer_idx": layer_idx, "page_size": kv.dims[3], "stride_qkv_t": qkv.dims[1], "stride_freq_p": rotary,
             "stride_q_t": h * d, "long_after": 0, "long_rows": rows // 2, "ntk_theta": 1.0, "ntk_factor": 1.0,
             "ntk_original_max": 1, **_kv_strides(kv, op.op), "num_blocks": kv.dims[0], "flag_ptr": None,
             "freq_rows": rows, "H": h, "HKV": hkv, "D": d, "R": rotary, "LONG": False, "DYNAMIC": False,
             "BLOCK_D": block_d, "BLOCK_H": block_h, "BLOCK_B": 64, "INTERLEAVED": bool(interleaved),
             "HAS_FLAG": False}  # fmt: skip
    dyn = {"qkv_ptr": _ptr(qkv), "row_offsets_ptr": "*i32", "freqs_ptr": _ptr(freqs), "kv_ptr": _ptr(kv),
           "cache_lengths_ptr": "*i32", "lookup_ptr": "*i32", "q_out_ptr": _ptr(qkv), "B": "i32",
           "stride_lut_b": "i32", "max_pages": "i32"}  # fmt: skip
    kernel = _kernel("rope_split_store", dyn, const, opts, num_warps=4)
    body = _Body(op)
    t, batch, pages = body.dim(0, 0), body.arith("subi", body.dim(1, 0), body.index(1)), body.dim(5, 1)
    body.nonempty(0)
    launch = Launch(kernel, ["%t"], _grid("%t", _cdiv(n_total, block_h)), frozenset({"kv_ptr", "q_out_ptr"}))
    operands = {n: body.operand(i) for i, n in enumerate(list(dyn)[:6])}
    q_type = builtin_type([None, h * d], qkv.dtype)
    q, cache = body.dispatch(
        f"{fname}_k0", launch, [t], {"B": batch, "stride_lut_b": pages, "max_pages": pages},
        operands, {"q_out_ptr": ("", q_type, [t]), "kv_ptr": "kv_ptr"},
    )  # fmt: skip
    return body.finish([q, cache])


def paged_attention(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.attention.paged` -> `_paged_attention_kernel` with the decode tiles, no key splits."""
    q, ro, kv, lens, lut = op.tensors
    layer_idx, scale, window = op.args[5:]
    _t, n_heads, head_dim = q.dims
    hkv = kv.dims[4]
    if n_heads is None or head_dim is None or hkv is None or n_heads % hkv:
        raise DispatchUnsupportedError(
            f"iree_dispatch: paged_attention: q {q.dims} does not fit kv_blocks {kv.dims}"
        )
    group = n_heads // hkv
    gp = _pow2(group)
    block_m, block_n = max(1, 16 // gp), (128 if head_dim <= 128 else 32)
    const = {"layer_idx": layer_idx, "page_size": kv.dims[3], "qk_scale": _float(scale, op.op, "scale") * _LOG2E,
             "window": 0 if window is None else _int(window, op.op, "sliding_window"), "split_len": 0, "num_blocks": kv.dims[0], "stride_qt": n_heads * head_dim,
             "stride_qh": head_dim, "stride_ot": n_heads * head_dim, "stride_oh": head_dim, "stride_os": 0,
             "stride_ms": 0, **_kv_strides(kv, op.op), "ml_ptr": None, "G": group, "GP": gp, "D": head_dim,
             "BLOCK_D": max(16, _pow2(head_dim)), "BLOCK_M": block_m, "BLOCK_N": block_n,
             "BLOCK_B": _pow2(opts.max_batch), "HAS_WINDOW": window is not None, "SPLIT": False, "DOT_FP32": False,
             "DOT_PRECISION": "ieee" if q.dtype == "f32" else "tf32"}  # fmt: skip
    dyn = {"q_ptr": _ptr(q), "ro_ptr": "*i32", "kv_ptr": _ptr(kv), "lens_ptr": "*i32", "lut_ptr": "*i32",
           "out_ptr": _ptr(q), "B": "i32", "max_pages": "i32", "stride_lut": "i32", "T": "i32"}  # fmt: skip
    kernel = _kernel("paged_attention", dyn, const, opts, num_warps=4, num_stages=2)
    body = _Body(op)
    t, batch, pages = body.dim(0, 0), body.arith("subi", body.dim(1, 0), body.index(1)), body.dim(4, 1)
    body.nonempty(0)
    message = f"iree_dispatch: fg.attention.paged: batch above max_batch {opts.max_batch}"
    body.guards.append(Guard(1, 0, "ule", opts.max_batch + 1, message))  # row_offsets: batch + 1 entries
    grid = _grid("%x", hkv, 1, (f"%m = arith.constant {block_m} : index", "%tiles = arith.ceildivui %t, %m : index",
                               "%x = arith.addi %tiles, %b : index"))  # fmt: skip
    launch = Launch(kernel, ["%t", "%b"], grid, frozenset({"out_ptr"}))
    operands = {n: body.operand(i) for i, n in enumerate(list(dyn)[:5])}
    (out,) = body.dispatch(
        f"{fname}_k0", launch, [t, batch], {"B": batch, "max_pages": pages, "stride_lut": pages, "T": t},
        operands, {"out_ptr": ("", builtin_type(q.dims, q.dtype), [t])},
    )  # fmt: skip
    return body.finish([out])


def qmatmul_gptq(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.qmatmul.gptq` -> `_gptq_matmul_kernel` (split-K for `opts.sms`), `_splitk_reduce_kernel`."""
    x, qweight, scales, qzeros, g_idx, bits, group_size, _sym, zero_format, clip = op.args
    if isinstance(g_idx, TensorArg) or bits not in (2, 4, 8) or not isinstance(qzeros, TensorArg):
        raise DispatchUnsupportedError(
            "iree_dispatch: qmatmul_gptq: only 2/4/8 bits with qzeros and no act-order g_idx have a custom dispatch"
        )
    assert isinstance(x, TensorArg) and isinstance(qweight, TensorArg) and isinstance(scales, TensorArg)
    k, n = x.dims[1], qweight.dims[1]
    if k is None or n is None:
        raise DispatchUnsupportedError(
            f"iree_dispatch: qmatmul_gptq: K and N must be static, got x {x.dims}, {qweight.dims}"
        )
    gs = k if group_size == -1 else _int(group_size, op.op, "group_size")
    block_m = 16 if opts.design_m <= 16 else 32 if opts.design_m <= 32 else 64
    block_n = 128 if n >= 128 else max(16, _pow2(n))
    block_k = 128 if gs % 128 == 0 or gs >= k else 64 if gs % 64 == 0 else 32
    tiles = _cdiv(opts.design_m, block_m) * _cdiv(n, block_n)
    split = max(1, min(2 * opts.sms // tiles, k // block_k, 16)) if tiles < opts.sms else 1
    k_per_split = _cdiv(_cdiv(k, split), block_k) * block_k
    split = _cdiv(k, k_per_split)
    const = {"gidx_ptr": None, "N": n, "K": k, "group_size": gs, "k_per_split": k_per_split,
             "clip": 0.0 if clip is None else _float(clip, op.op, "clip"), "stride_xm": k, "stride_xk": 1, "stride_qw": n,
             "stride_s": n, "stride_qz": qzeros.dims[1], "stride_om": n, "BITS": bits, "HAS_ZEROS": True,
             "ZERO_V1": zero_format == "v1", "HAS_GIDX": False,
             "GROUP_PER_TILE": gs % block_k == 0 and k_per_split % block_k == 0, "HAS_CLIP": clip is not None,
             "SPLIT_K": split, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k,
             "DOT_PRECISION": "ieee" if x.dtype == "f32" else "tf32", "DOT_FP32": False}  # fmt: skip
    dyn = {"x_ptr": _ptr(x), "qw_ptr": "*i32", "scales_ptr": _ptr(scales), "qz_ptr": "*i32", "out_ptr": _ptr(x),
           "ws_ptr": "*fp32", "M": "i32"}  # fmt: skip
    kernel = _kernel("gptq_matmul", dyn, const, opts, num_warps=4 if block_m <= 32 else 8, num_stages=3)
    body = _Body(op)
    m = body.dim(0, 0)
    body.nonempty(0)
    grid = _grid("%gn", "%gm", split, (f"%gn = arith.constant {_cdiv(n, block_n)} : index",
                                       f"%bm = arith.constant {block_m} : index",
                                       "%gm = arith.ceildivui %m, %bm : index"))  # fmt: skip
    operands = {name: body.operand(i) for i, name in enumerate(list(dyn)[:4])}
    out_type = builtin_type([None, n], x.dtype)
    if split == 1:
        launch = Launch(kernel, ["%m"], grid, frozenset({"out_ptr"}))
        (out,) = body.dispatch(
            f"{fname}_k0", launch, [m], {"M": m}, operands, {"out_ptr": ("", out_type, [m])}
        )
        return body.finish([out])
    launch = Launch(kernel, ["%m"], grid, frozenset({"ws_ptr"}))
    ws_type = f"tensor<{split}x?x{n}xf32>"
    (ws,) = body.dispatch(f"{fname}_k0", launch, [m], {"M": m}, operands, {"ws_ptr": ("", ws_type, [m])})
    block = 256 if opts.design_m * n >= 512 * opts.sms else 64
    reduce = _kernel("splitk_reduce", {"ws_ptr": "*fp32", "out_ptr": _ptr(x), "numel": "i32"},
                     {"SPLIT_K": split, "BLOCK": block}, opts, num_warps=4, num_stages=1)  # fmt: skip
    numel = body.arith("muli", m, body.index(n))
    grid = _grid(
        "%x", 1, 1, (f"%bs = arith.constant {block} : index", "%x = arith.ceildivui %e, %bs : index")
    )
    launch = Launch(reduce, ["%e"], grid, frozenset({"out_ptr"}))
    (out,) = body.dispatch(f"{fname}_k1", launch, [numel], {"numel": numel}, {"ws_ptr": ws},
                           {"out_ptr": ("", out_type, [m])})  # fmt: skip
    return body.finish([out])


BUILDERS: dict[str, Callable[[Operator, str, DispatchOptions], Emitted]] = {
    "rope_split_store": rope_split_store,
    "paged_attention": paged_attention,
    "qmatmul_gptq": qmatmul_gptq,
}
