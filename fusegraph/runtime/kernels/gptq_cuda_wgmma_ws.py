"""The warp-specialized RS-wgmma GPTQ kernel (`gptq_cuda_wgmma_ws_src.py`): compile and launch (its plan:
`gptq_cuda_wgmma_plan.py`).

For plain 4-bit x `[M, K]` fp16/bf16 or 8-bit fp16 on a compute-capability-9.0 GPU: a CTA is a producer warpgroup
(a shared-memory ring: x by the copy engine through a tensor map, the words by cp.async) and `ncw`
consumer warpgroups, each owning one 64-column strip, over one tile of up to 256 rows of x (the
wgmma's N: M ≤ 256 takes one pass over the weights) and a K slice (split-K through a thread-block
cluster) or a stream-K run. `gptq_cuda_wgmma.maybe_wgmma` runs it for {"wgmma": True} (the default
dispatch's plan where `gptq_cuda_wgmma.wgmma_takes_by_default` says so).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_cuda_launch import KernelCache, launch_params, raise_smem_limit
from fusegraph.runtime.kernels.gptq_cuda_wgmma_plan import RSWG_KEYS, SMEM_MAX, rswg_plan, rswg_spec, rswg_tok
from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import (
    RSWG_KERNEL_NAME,
    RswgSpec,
    rswg_kernel_source,
    rswg_smem_bytes,
)

__all__ = ["RSWG_KEYS", "gptq_rswg_matmul", "precompile", "row_stride", "rswg_plan", "rswg_spec", "rswg_tok"]

_SK_BUF: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
_CACHE: KernelCache[tuple[int, RswgSpec]] = KernelCache()  # by (device index, spec)
_KERNELS, _FAILED = _CACHE.kernels, _CACHE.failed


def _compile(spec: RswgSpec, device: torch.device) -> Any:
    """NVRTC-compile `spec` for `device` and raise its dynamic shared-memory limit (raises on failure)."""
    with torch.cuda.device(device):
        kern = torch.cuda._compile_kernel(
            rswg_kernel_source(spec), RSWG_KERNEL_NAME, compute_capability="90a"
        )
        raise_smem_limit(kern, rswg_smem_bytes(spec))
    return kern


def _kernel(spec: RswgSpec, device: torch.device) -> Any:
    """The compiled kernel of `spec` on `device` (compiled once); raises RuntimeError if NVRTC fails."""
    key = (device.index or 0, spec)
    kern = _CACHE.get(key, lambda: _compile(spec, device))  # _compile raises its shared-memory limit
    if kern is None and key not in _FAILED:
        raise RuntimeError(f"gptq_cuda_wgmma: {spec} is not compiled; run it once before CUDA-graph capture")
    if kern is None:
        raise RuntimeError(f"gptq_cuda_wgmma: {spec} did not compile: {_FAILED[key]}")
    return kern


def precompile(
    specs: Iterable[RswgSpec], device: torch.device, threads: int = 8, errors: list[str] | None = None
) -> int:
    """Compile the specs not yet compiled on `device` in `threads` threads (NVRTC runs without the GIL),
    for benchmarks; a spec that fails here is left for `_kernel` to compile (and report). Returns the
    number compiled; the failures' reasons are appended to `errors`.

    Example:
        >>> precompile([rswg_spec(rswg_plan(256, 4096, 4096, 132), bf16=False, zero_v1=True)], x.device)
        1
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    todo = sorted({s for s in specs if (index, s) not in _KERNELS}, key=repr)

    def one(spec: RswgSpec) -> bool:
        try:
            torch.cuda.set_device(index)  # a new thread: the device's context current for the driver calls
            torch.cuda.synchronize(index)  # (a runtime call binds the primary context to this thread)
            _KERNELS[(index, spec)] = _compile(spec, device)
        except Exception as err:  # noqa: BLE001 - compiled again (and reported) on first use
            if errors is not None:
                errors.append(f"{spec}: {type(err).__name__}: {str(err)[:200]}")
            return False
        return True

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return sum(pool.map(one, todo))


def gptq_rswg_matmul(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    *,
    group_size: int,
    zero_format: str,
    plan: dict[str, Any],
    bits: int = 4,
) -> torch.Tensor:
    """`x @ W` for plain 4- or 8-bit repacked GPTQ tensors with the warp-specialized kernel (module docstring).

    Operands as in `gptq_tiled_matmul` (checked there: contiguous, K % 128 == 0, group_size a multiple
    of 128 dividing K); x 16-byte aligned with a row stride that is a multiple of 8; `plan` as `rswg_plan`
    gives it; 8 bits need fp16. With plan["pdl"] = P ≥ 1 it is launched as a programmatic dependent
    launch (its producer asks L2 for P·stages weight blocks a strip, then waits for the kernel before it,
    `griddepcontrol.wait`, before it reads x). Raises ValueError naming the operand or plan field that it
    cannot take.

    Example:
        >>> y = gptq_rswg_matmul(x, t["qweight"], scales, t["qzeros"], group_size=128, zero_format="v1",
        ...                      plan=rswg_plan(256, 4096, 4096, 132))
    """
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    if x.dtype not in (torch.float16, torch.bfloat16) or scales.dtype != x.dtype:
        raise ValueError(
            f"gptq_rswg_matmul: x {x.dtype} / scales {scales.dtype}: needs fp16 or bf16, both alike"
        )
    if x.data_ptr() % 16 or x.stride(0) % 8 or x.stride(1) != 1:
        raise ValueError(
            "gptq_rswg_matmul: x must be 16-byte aligned with a row stride that is a multiple of 8"
        )
    s_row, z_row = row_stride(scales), row_stride(qzeros_t)
    if s_row % 8 or z_row % 4 or scales.data_ptr() % 16 or qzeros_t.data_ptr() % 16:
        raise ValueError("gptq_rswg_matmul: scales/qzeros rows must be 16-byte aligned (N a multiple of 64)")
    split, tok, ncw = int(plan["split_k"]), int(plan["tok"]), int(plan["ncw"])
    blocks = k // 128
    if not 1 <= split <= min(8, blocks):
        raise ValueError(f"gptq_rswg_matmul: split_k must be 1..{min(8, blocks)} (8 and K/128), got {split}")
    if ncw not in (1, 2, 3) or n % (64 * ncw):
        raise ValueError(f"gptq_rswg_matmul: ncw must be 1..3 with N={n} a multiple of 64·ncw, got {ncw}")
    if plan.get("mc") and (n // (64 * ncw)) % 2:
        raise ValueError(
            f"gptq_rswg_matmul: mc needs an even number of column tiles, N={n} has {n // (64 * ncw)}"
        )
    if bits not in (4, 8):
        raise ValueError(f"gptq_rswg_matmul: bits must be 4 or 8, got {bits}")
    if bits == 8 and x.dtype != torch.float16:
        raise ValueError(f"gptq_rswg_matmul: bits=8 needs fp16 x, got {x.dtype}")
    spec = rswg_spec(plan, bf16=x.dtype == torch.bfloat16, zero_v1=zero_format == "v1", bits=bits)
    smem = rswg_smem_bytes(spec)
    if smem > SMEM_MAX:
        raise ValueError(
            f"gptq_rswg_matmul: {smem} bytes of shared memory for {spec}: at most {SMEM_MAX}; fewer stages"
        )
    kern = _kernel(spec, x.device)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    tiles_m = (m + tok - 1) // tok
    grid = (tiles_m, n // (64 * ncw), split)
    cnt = ws = out  # (not read without stream-K)
    if spec.sk:
        units = tiles_m * (n // (64 * ncw)) * blocks
        if units >= 2**31:
            raise ValueError(f"gptq_rswg_matmul: sk: {units} (tile, block) pairs, at most 2^31 - 1")
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        ctas = min(units, int(plan.get("ctas", sms * spec.minb)))
        cnt, ws = _sk_buffers(x.device, tiles_m * (n // (64 * ncw)), ctas * 2 * tok * 64 * ncw)
        grid = (ctas, 1, 1)
    tmap = _tma_map(x, tok) if spec.tma else ctypes.create_string_buffer(192)
    _launch(kern, grid, (128 * (ncw + 1), 1, 1), smem,
            [x, qweight_t, scales, qzeros_t, out, m, n, k, k if group_size == -1 else group_size, blocks,
             x.stride(0), s_row, z_row, out.stride(0), tiles_m, cnt, ws, tmap],
            pdl=spec.pdl > 0)  # fmt: skip
    return out


def row_stride(t: torch.Tensor) -> int:
    """The row stride the kernel steps a group by: `t.stride(0)`, or for a single row (one group, group_size -1), whose
    stride torch may leave at any value (1 after a transpose), its length: no block reads past row 0.

    Example:
        >>> row_stride(torch.zeros(32, 1).t()), row_stride(torch.zeros(3, 32))
        (32, 32)
    """
    return t.stride(0) if t.shape[0] > 1 else t.shape[1]


def _aligned64(buf: ctypes.Array[ctypes.c_char]) -> int:
    """The 64-byte aligned address inside a 192-byte buffer (a CUtensorMap is 128 bytes, 64-aligned)."""
    return (ctypes.addressof(buf) + 63) & ~63


def _tma_map(x: torch.Tensor, tok: int) -> ctypes.Array[ctypes.c_char]:
    """The tensor map of x `[M, K]` for boxes of 64 values x `tok` rows with the 128-byte swizzle (rows past
    M read as zeros), encoded by the driver (`cuTensorMapEncodeTiled`) into a 192-byte host buffer."""
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    buf = ctypes.create_string_buffer(192)
    m, k = x.shape
    dims = (ctypes.c_uint64 * 2)(k, m)
    strides = (ctypes.c_uint64 * 1)(x.stride(0) * x.element_size())
    box = (ctypes.c_uint32 * 2)(64, tok)
    one = (ctypes.c_uint32 * 2)(1, 1)
    dtype = 9 if x.dtype == torch.bfloat16 else 6  # CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 / FLOAT16
    _check_cuda(_get_gpu_runtime_library().cuTensorMapEncodeTiled(
        ctypes.c_void_p(_aligned64(buf)), ctypes.c_int(dtype), ctypes.c_uint(2), ctypes.c_void_p(x.data_ptr()),
        dims, strides, box, one, ctypes.c_int(0), ctypes.c_int(3), ctypes.c_int(2), ctypes.c_int(0),
    ))  # fmt: skip  # no interleave, 128-byte swizzle, 128-byte L2 promotion, zero fill
    return buf


def _launch(
    kern: Any,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    smem: int,
    args: list[Any],
    *,
    pdl: bool,
) -> None:
    """`cuLaunchKernel` on torch's current stream: tensors as pointers, ints as C ints, a 192-byte buffer as
    the 128-byte tensor map it holds (passed by value: a `__grid_constant__` parameter); `pdl`: through
    `cuLaunchKernelEx` with the programmatic-stream-serialization attribute (`gptq_cuda_launch.launch_params`)."""
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    keep: list[Any] = []
    params = (ctypes.c_void_p * len(args))()
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            keep.append(ctypes.c_void_p(arg.data_ptr()))
            params[i] = ctypes.cast(ctypes.byref(keep[-1]), ctypes.c_void_p)
        elif isinstance(arg, int):
            keep.append(ctypes.c_int(arg))
            params[i] = ctypes.cast(ctypes.byref(keep[-1]), ctypes.c_void_p)
        else:  # the tensor map's buffer
            params[i] = ctypes.c_void_p(_aligned64(arg))
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    if pdl:
        launch_params(kern.func, grid, block, smem, params, pdl=True)
        return
    _check_cuda(_get_gpu_runtime_library().cuLaunchKernel(
        kern.func, grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, stream, params, None))  # fmt: skip


def _sk_buffers(device: torch.device, tiles: int, floats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stream-K's tickets (int32, one a tile, zero between launches: the last CTA of a tile resets its own)
    and parts workspace (fp32) on `device`, kept and grown, never while a CUDA graph is being captured."""
    key = device.index or 0
    have = _SK_BUF.get(key)
    if have is None or have[0].numel() < tiles or have[1].numel() < floats:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "gptq_cuda_wgmma: sk workspace too small; run this shape once before CUDA-graph capture"
            )
        old = (0, 0) if have is None else (have[0].numel(), have[1].numel())
        have = (torch.zeros(max(tiles, old[0]), dtype=torch.int32, device=device),
                torch.empty(max(floats, old[1]), dtype=torch.float32, device=device))  # fmt: skip
        _SK_BUF[key] = have
    return have
