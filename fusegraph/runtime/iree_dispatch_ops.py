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

from collections.abc import Callable

from fusegraph.runtime.iree_dispatch_body import (
    LOG2E,
    Body,
    as_float,
    as_int,
    cdiv,
    grid,
    kernel_ptx,
    kv_strides,
    pow2,
    ptr,
)
from fusegraph.runtime.iree_dispatch_gptq import qmatmul_gptq, qmatmul_gptq_pieces
from fusegraph.runtime.iree_dispatch_ir import (
    DispatchOptions,
    DispatchUnsupportedError,
    Emitted,
    Guard,
    Launch,
    Operator,
    builtin_type,
)
from fusegraph.runtime.kernels.paged_attention import _paged_attention_kernel as paged_attention_kernel
from fusegraph.runtime.kernels.rope_split_store import _rope_split_store_kernel as rope_split_store_kernel

__all__ = ["BUILDERS"]


def rope_split_store(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.rope_split_store` -> `_rope_split_store_kernel`, the cache tied (written in place)."""
    qkv, ro, freqs, kv, lens, lut = op.tensors
    layer_idx, interleaved, n_heads, n_kv_heads, head_dim, long_after, ntk = op.args[6:]
    if long_after is not None or ntk is not None:
        raise DispatchUnsupportedError(
            "iree_dispatch: rope_split_store: longrope/dynamic NTK have no custom dispatch yet"
        )
    h, hkv, d = (
        as_int(v, op.op, f)
        for v, f in ((n_heads, "n_heads"), (n_kv_heads, "n_kv_heads"), (head_dim, "head_dim"))
    )
    rows, rotary = freqs.dims
    if rows is None or rotary is None or qkv.dims[1] is None:
        raise DispatchUnsupportedError(
            f"iree_dispatch: rope_split_store: freqs_cis/qkv widths must be static: {freqs.dims}"
        )
    n_total = h + 2 * hkv
    block_d = pow2(d)
    block_h = max(1, min(pow2(n_total), 2048 // block_d))
    const = {"layer_idx": layer_idx, "page_size": kv.dims[3], "stride_qkv_t": qkv.dims[1], "stride_freq_p": rotary,
             "stride_q_t": h * d, "long_after": 0, "long_rows": rows // 2, "ntk_theta": 1.0, "ntk_factor": 1.0,
             "ntk_original_max": 1, **kv_strides(kv, op.op), "num_blocks": kv.dims[0], "flag_ptr": None,
             "freq_rows": rows, "H": h, "HKV": hkv, "D": d, "R": rotary, "LONG": False, "DYNAMIC": False,
             "BLOCK_D": block_d, "BLOCK_H": block_h, "BLOCK_B": 64, "INTERLEAVED": bool(interleaved),
             "HAS_FLAG": False, "PDL": 0}  # fmt: skip
    dyn = {"qkv_ptr": ptr(qkv), "row_offsets_ptr": "*i32", "freqs_ptr": ptr(freqs), "kv_ptr": ptr(kv),
           "cache_lengths_ptr": "*i32", "lookup_ptr": "*i32", "q_out_ptr": ptr(qkv), "B": "i32",
           "stride_lut_b": "i32", "max_pages": "i32"}  # fmt: skip
    kernel = kernel_ptx(rope_split_store_kernel, dyn, const, opts, num_warps=4)
    body = Body(op)
    t, batch, pages = body.dim(0, 0), body.arith("subi", body.dim(1, 0), body.index(1)), body.dim(5, 1)
    body.nonempty(0)
    launch = Launch(kernel, ["%t"], grid("%t", cdiv(n_total, block_h)), frozenset({"kv_ptr", "q_out_ptr"}))
    operands = {n: body.operand(i) for i, n in enumerate(list(dyn)[:6])}
    q_type = builtin_type([None, h * d], qkv.dtype)
    q, cache = body.dispatch(
        f"{fname}_k0", launch, [t], {"B": batch, "stride_lut_b": pages, "max_pages": pages},
        operands, {"q_out_ptr": ("", q_type, [t]), "kv_ptr": "kv_ptr"},
    )  # fmt: skip
    return body.finish([q, cache])


def paged_attention(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.attention.paged` -> `_paged_attention_kernel` with the decode tiles, no key splits (and no perm)."""
    if len(op.tensors) != 5 or any(a is not None for a in op.args[8:]):
        raise DispatchUnsupportedError("iree_dispatch: paged_attention: no dispatch for an output perm")
    q, ro, kv, lens, lut = op.tensors
    layer_idx, scale, window = op.args[5:8]
    _t, n_heads, head_dim = q.dims
    hkv = kv.dims[4]
    if n_heads is None or head_dim is None or hkv is None or n_heads % hkv:
        raise DispatchUnsupportedError(
            f"iree_dispatch: paged_attention: q {q.dims} does not fit kv_blocks {kv.dims}"
        )
    group = n_heads // hkv
    gp = pow2(group)
    block_m, block_n = max(1, 16 // gp), (128 if head_dim <= 128 else 32)
    const = {"layer_idx": layer_idx, "page_size": kv.dims[3], "qk_scale": as_float(scale, op.op, "scale") * LOG2E,
             "window": 0 if window is None else as_int(window, op.op, "sliding_window"), "split_len": 0, "num_blocks": kv.dims[0], "stride_qt": n_heads * head_dim,
             "stride_qh": head_dim, "stride_ot": n_heads * head_dim, "stride_oh": head_dim, "stride_os": 0,
             "stride_ms": 0, **kv_strides(kv, op.op), "ml_ptr": None, "inv_ptr": None, "fin_ptr": None, "cnt_ptr": None, "HAS_PERM": False,
             "NUM_SPLITS": 1, "MERGE": False, "G": group, "GP": gp, "D": head_dim,
             "BLOCK_D": max(16, pow2(head_dim)), "BLOCK_M": block_m, "BLOCK_N": block_n,
             "BLOCK_B": pow2(opts.max_batch), "HAS_WINDOW": window is not None, "SPLIT": False, "DOT_FP32": False,
             "DOT_PRECISION": "ieee" if q.dtype == "f32" else "tf32", "PDL": 0}  # fmt: skip
    dyn = {"q_ptr": ptr(q), "ro_ptr": "*i32", "kv_ptr": ptr(kv), "lens_ptr": "*i32", "lut_ptr": "*i32",
           "out_ptr": ptr(q), "B": "i32", "max_pages": "i32", "stride_lut": "i32", "T": "i32"}  # fmt: skip
    kernel = kernel_ptx(paged_attention_kernel, dyn, const, opts, num_warps=4, num_stages=2)
    body = Body(op)
    t, batch, pages = body.dim(0, 0), body.arith("subi", body.dim(1, 0), body.index(1)), body.dim(4, 1)
    body.nonempty(0)
    message = f"iree_dispatch: fg.attention.paged: batch above max_batch {opts.max_batch}"
    body.guards.append(Guard(1, 0, "ule", opts.max_batch + 1, message))  # row_offsets: batch + 1 entries
    counts = grid("%x", hkv, 1, (f"%m = arith.constant {block_m} : index", "%tiles = arith.ceildivui %t, %m : index",
                               "%x = arith.addi %tiles, %b : index"))  # fmt: skip
    launch = Launch(kernel, ["%t", "%b"], counts, frozenset({"out_ptr"}))
    operands = {n: body.operand(i) for i, n in enumerate(list(dyn)[:5])}
    (out,) = body.dispatch(
        f"{fname}_k0", launch, [t, batch], {"B": batch, "max_pages": pages, "stride_lut": pages, "T": t},
        operands, {"out_ptr": ("", builtin_type(q.dims, q.dtype), [t])},
    )  # fmt: skip
    return body.finish([out])


BUILDERS: dict[str, Callable[[Operator, str, DispatchOptions], Emitted]] = {
    "rope_split_store": rope_split_store,
    "paged_attention": paged_attention,
    "qmatmul_gptq": qmatmul_gptq,
    "qmatmul_gptq_pieces": qmatmul_gptq_pieces,
}
