"""The warp-specialized RS-wgmma GPTQ kernel (`gptq_cuda_wgmma_ws_src.py`): plan and launch.

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
from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import (
    RSWG_KERNEL_NAME,
    RswgSpec,
    rswg_kernel_source,
    rswg_smem_bytes,
)

__all__ = ["RSWG_KEYS", "gptq_rswg_matmul", "precompile", "rswg_plan", "rswg_spec"]

SMEM_MAX = 232448  # the opt-in dynamic shared memory of one CTA on sm_90 (227 KB)
RSWG_KEYS = (
    "split_k",
    "tok",
    "stages",
    "ncw",
    "minb",
    "vred",
    "sk",
    "ctas",
    "probe",
    "tma",
    "pdl",
    "sred",
    "mc",
)  # what a config may set (overrides the plan)
_MIN_BLOCKS = 16  # split-K leaves a CTA at least this many 128-row blocks (half at tok ≤ 64): its fixed costs
_FIXED_BLOCKS = 4.0  # a CTA's cost outside its loop (ring fill, epilogue), in blocks of its loop
_REDUCE_BLOCKS = 4.0  # the split-K sum over a cluster
_SK_MIN_BLOCKS = 64  # stream-K where the tiles are few (≤ a quarter of the SMs) and K is at least this long
_SK_BUF: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
_CACHE: KernelCache[tuple[int, RswgSpec]] = KernelCache()  # by (device index, spec)
_KERNELS, _FAILED = _CACHE.kernels, _CACHE.failed


def rswg_tok(m: int, cap: int = 256) -> int:
    """The rows of x a CTA takes: M rounded up to 8 up to `cap`, else M spread evenly over ⌈M/cap⌉ tiles."""
    tiles = (m + cap - 1) // cap
    per = (m + tiles - 1) // tiles
    return max(8, (per + 7) // 8 * 8)


# Past 128 rows a tile (M > 128) the plan weighs tok and tok halved (≤ 128 rows) at split 1 and 2 by an
# estimate in µs, fitted to the H200 benchmark (docs/benchmarks.md, fifth session): a 128-row block costs a
# CTA 0.25 + tok/256 µs (×1.2 for 8-bit's 2-stage ring), a CTA 2.6 µs more (ring fill, epilogue) and the
# cluster sum of split 2 0.8 + 2.1·tok/256 µs more; rounds of CTAs over the SMs. (Split 4 and stream-K lost
# at every M ≥ 256 cell: clusters of 4 a CTA an SM do not all fit at once; stream-K's fp32 parts.)
_BLOCK_US, _CTA_US, _SUM_US = (0.25, 1.0), 2.6, (0.8, 2.1)
_TWO_STAGE = 1.2


def _stages(tok: int, split: int, ncw: int, minb: int, bits: int) -> int:
    """The deepest ring, 2..4 stages, whose shared memory fits `minb` CTAs an SM."""
    stages = 4
    while (
        stages > 2
        and minb * rswg_smem_bytes(RswgSpec(False, tok, split, True, stages, ncw, minb, bits=bits)) > SMEM_MAX
    ):
        stages -= 1
    return stages


def _wide_plan(m: int, n: int, k: int, sms: int, bits: int, ncw: int) -> tuple[int, int, int]:
    """(tok, split, stages) for tok > 128: the least estimate (above) of tok or tok halved at split 1 or 2."""
    blocks = k // 128
    best: tuple[float, int, int, int] | None = None
    for cap in (256, 128):
        tok = rswg_tok(m, cap)
        for split in (1, 2) if blocks >= 2 else (1,):
            stages = _stages(tok, split, ncw, 1, bits)
            ctas = -(-m // tok) * (n // (64 * ncw)) * split
            block = (_BLOCK_US[0] + _BLOCK_US[1] * tok / 256) * (_TWO_STAGE if stages == 2 else 1.0)
            fixed = _CTA_US + ((_SUM_US[0] + _SUM_US[1] * tok / 256) if split > 1 else 0.0)
            est = -(-ctas // sms) * (blocks / split * block + fixed)
            if best is None or est < best[0]:
                best = (est, tok, split, stages)
    assert best is not None
    return best[1], best[2], best[3]


# Three strips a CTA (ncw = 3, 512 threads, ≤ 128 rows) where N/64 divides by 3, 4 bits, past 128 rows: taken when
# its CTAs fill the last round of SMs by more than this factor over the two-strip plan's. H200, seventh session (qkv,
# 96 strips: 32 column tiles; docs/benchmarks.md): M=256 128 rows split 2 (128 CTAs) 24.5 µs vs 26.2 (96 CTAs);
# M=512 split 1 45.9 vs 50.5; M=1024 (both fill 97%) 93.6 vs 93.3; four strips a CTA lost on every shape.
_NCW3_FILL_GAIN = 1.1


def _fill(ctas: int, sms: int) -> float:
    """The share of the SMs' CTA slots the grid keeps busy over its rounds (1 CTA an SM)."""
    return ctas / (-(-ctas // sms) * sms)


def _three_strip_plan(m: int, n: int, k: int, sms: int, bits: int, two: float) -> dict[str, Any] | None:
    """The ncw = 3 plan past 128 rows (split 1 or 2, whichever fills more), or None where the two-strip plan's
    fill `two` is within `_NCW3_FILL_GAIN` of it or N/64 does not divide by 3."""
    if bits != 4 or (n // 64) % 3 or m <= 128:
        return None
    tok, blocks = rswg_tok(m, 128), k // 128
    tiles = -(-m // tok) * (n // 192)
    split = max((s for s in (1, 2) if s <= blocks), key=lambda s: (_fill(tiles * s, sms), -s))
    if _fill(tiles * split, sms) <= _NCW3_FILL_GAIN * two:
        return None
    return {"split_k": split, "tok": tok, "stages": _stages(tok, split, 3, 1, bits), "ncw": 3, "minb": 1, "tma": 1,
            "sk": 0, "vred": int(split > 1), "pdl": 0}  # fmt: skip


def rswg_plan(m: int, n: int, k: int, sms: int, bits: int = 4) -> dict[str, Any] | None:
    """{"split_k", "tok", "stages", "ncw", "minb", "tma", "sk", "vred"} for x `[m, k]` · W `[k, n]`, or None when the
    kernel cannot take it.

    tok = `rswg_tok(m)`; two strips a CTA (one where N/64 is odd); two CTAs an SM at tok ≤ 64; x by the
    copy engine. Past tok = 128: tok or tok halved at split 1 or 2, by the estimate above `_wide_plan`; three
    strips a CTA of ≤ 128 rows instead where that fills the SMs' last round better (`_NCW3_FILL_GAIN`: qkv at
    M = 256 and 512).
    Else split-K: of the s ≤ 8 that leave each CTA at least `_MIN_BLOCKS` blocks (16; 8 at tok ≤ 64),
    the least ⌈tiles·s / (SMs·minb)⌉ · (blocks/s + `_FIXED_BLOCKS`) + `_REDUCE_BLOCKS` (s > 1), its
    cluster sum 4 floats a load ("vred"); stream-K instead where the tiles are at most a quarter of the
    SMs and K has at least `_SK_MIN_BLOCKS` blocks. The deepest ring (≤ 4 stages) that fits (8-bit: its
    words are twice the bytes). "pdl" 0 (a caller sets P ≥ 1 to launch it as a programmatic dependent
    launch that first asks L2 for P·stages weight blocks a strip).
    (From the H200 benchmark of the four Llama-3-8B shapes at M = 64..1024, docs/benchmarks.md.)

    Example:
        >>> rswg_plan(256, 28672, 4096, 132)
        {'split_k': 1, 'tok': 256, 'stages': 3, 'ncw': 2, 'minb': 1, 'tma': 1, 'sk': 0, 'vred': 0, 'pdl': 0}
        >>> rswg_plan(256, 6144, 4096, 132)["ncw"]  # qkv: 3 strips a CTA, 128 CTAs
        3
    """
    if m < 1 or n % 64 or k % 128 or bits not in (4, 8):
        return None
    tok = rswg_tok(m)
    ncw = 2 if (n // 64) % 2 == 0 else 1
    if tok > 128:
        tok, split, stages = _wide_plan(m, n, k, sms, bits, ncw)
        three = _three_strip_plan(m, n, k, sms, bits, _fill(-(-m // tok) * (n // (64 * ncw)) * split, sms))
        if three is not None:
            return three
        return {"split_k": split, "tok": tok, "stages": stages, "ncw": ncw, "minb": 1, "tma": 1, "sk": 0,
                "vred": int(split > 1), "pdl": 0}  # fmt: skip
    minb = 2 if tok <= 64 else 1
    tiles = ((m + tok - 1) // tok) * (n // (64 * ncw))
    blocks = k // 128
    min_blocks = _MIN_BLOCKS // 2 if tok <= 64 else _MIN_BLOCKS
    slots = sms * minb

    def cost(
        s: int,
    ) -> float:  # rounds of CTAs x (blocks a CTA + its fixed cost) + the split-K sum, in blocks
        return -(-tiles * s // slots) * (blocks / s + _FIXED_BLOCKS) + (_REDUCE_BLOCKS if s > 1 else 0.0)

    fits = [s for s in range(1, min(8, blocks) + 1) if blocks // s >= min_blocks] or [1]
    split = min(fits, key=lambda s: (cost(s), s))
    sk = int(4 * tiles <= sms and blocks >= _SK_MIN_BLOCKS)
    if sk:
        split = 1
    stages = _stages(tok, split, ncw, minb, bits)
    vred = int(split > 1)
    return {
        "split_k": split,
        "tok": tok,
        "stages": stages,
        "ncw": ncw,
        "minb": minb,
        "tma": 1,
        "sk": sk,
        "vred": vred,
        "pdl": 0,
    }


def rswg_spec(plan: dict[str, Any], *, bf16: bool, zero_v1: bool, bits: int = 4) -> RswgSpec:
    """The kernel instance of a plan (`rswg_plan`'s keys; "vred", "sk", "probe", "tma", "pdl" optional).

    Example:
        >>> rswg_spec(rswg_plan(256, 4096, 4096, 132), bf16=False, zero_v1=True).tok  # 128 rows, split 2
        128
    """
    return RswgSpec(bf16=bf16, tok=int(plan["tok"]), split=int(plan["split_k"]), zero_v1=zero_v1,
                    stages=int(plan["stages"]), ncw=int(plan["ncw"]), minb=int(plan["minb"]),
                    vred=bool(plan.get("vred", False)),
                    sk=bool(plan.get("sk", False)), probe=int(plan.get("probe", 0)),
                    tma=bool(plan.get("tma", False)), bits=bits, pdl=int(plan.get("pdl", 0)),
                    sred=bool(plan.get("sred", False)), mc=bool(plan.get("mc", False)))  # fmt: skip


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
    if scales.stride(0) % 8 or qzeros_t.stride(0) % 4 or scales.data_ptr() % 16 or qzeros_t.data_ptr() % 16:
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
             x.stride(0), scales.stride(0), qzeros_t.stride(0), out.stride(0), tiles_m, cnt, ws, tmap],
            pdl=spec.pdl > 0)  # fmt: skip
    return out


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
