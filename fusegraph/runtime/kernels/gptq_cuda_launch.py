"""Launching an NVRTC-compiled kernel (`torch.cuda._compile_kernel`'s) with programmatic dependent launch,
letting it take more than 48 KB of dynamic shared memory (`raise_smem_limit`), and compiling each kernel
once (`KernelCache`, shared by the small-M, mid-M, wgmma and permutation kernels).

`torch.cuda._compile_kernel` launches through `cuLaunchKernel`, which takes no launch attributes. For
act-order the CUDA GPTQ kernels run right after their own permutation of x (`gptq_cuda`): launched
with the programmatic-stream-serialization attribute (Hopper), a kernel may start while the
permutation runs, stream its first weight blocks, and wait for x at `griddepcontrol.wait`. This
module builds the `CUlaunchConfig` for `cuLaunchKernelEx` by ctypes (the CUDA 12+ driver ABI); it
is captured by CUDA graphs like any other launch.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import torch

__all__ = ["KernelCache", "launch", "launch_params", "raise_smem_limit"]

K = TypeVar("K", bound=Hashable)

_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class _AttrValue(ctypes.Union):
    _fields_ = [("flag", ctypes.c_int), ("raw", ctypes.c_char * 64)]  # CUlaunchAttributeValue: 64 bytes


class _Attr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", _AttrValue)]


class _Config(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared_mem", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(_Attr)),
        ("num_attrs", ctypes.c_uint),
    ]


def launch(kern: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int,
           args: list[Any], *, pdl: bool) -> None:  # fmt: skip
    """Launch `kern` (a `torch.cuda._compile_kernel` result) on torch's current stream; `pdl`: as a
    programmatic dependent launch (its `griddepcontrol.wait` waits for the kernel before it).

    `args` as `kern`'s own call takes them: CUDA tensors (as pointers) and Python ints (as C ints).

    Example:
        >>> launch(kern, (96, 2, 1), (128, 1, 1), 9216, [x, qweight_t, 4096], pdl=True)
    """
    if not pdl:
        kern(grid=grid, block=block, shared_mem=shared_mem, args=args)
        return
    values: list[ctypes.c_void_p | ctypes.c_int] = []
    params = (ctypes.c_void_p * len(args))()
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            values.append(ctypes.c_void_p(arg.data_ptr()))
        elif isinstance(arg, int):
            values.append(ctypes.c_int(arg))
        else:
            raise TypeError(f"gptq_cuda_launch: argument {i} is a {type(arg).__name__}, not a tensor or int")
        params[i] = ctypes.cast(ctypes.byref(values[-1]), ctypes.c_void_p)
    launch_params(kern.func, grid, block, shared_mem, params, pdl=True)


def launch_params(func: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int,
                  params: Any, *, pdl: bool) -> None:  # fmt: skip
    """`cuLaunchKernelEx` of the driver function `func` on torch's current stream with `params` as the
    driver takes them (a ctypes array of void pointers, one to each argument's bytes: any argument type,
    e.g. a tensor map by value); `pdl`: with the programmatic-stream-serialization attribute.

    Example:
        >>> launch_params(kern.func, (132, 1, 1), (384, 1, 1), 200 * 1024, params, pdl=True)
    """
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    attr = _Attr(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value.flag = 1
    cfg = _Config((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem,
                  ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), ctypes.pointer(attr) if pdl else None,
                  1 if pdl else 0)  # fmt: skip
    _check_cuda(_get_gpu_runtime_library().cuLaunchKernelEx(ctypes.byref(cfg), func, params, None))


def raise_smem_limit(kern: Any, smem: int) -> None:
    """Let `kern` (a `torch.cuda._compile_kernel` result) launch with `smem` bytes of dynamic shared memory
    (over the default 48 KB).

    Example:
        >>> raise_smem_limit(kern, 160 * 1024)
    """
    if hasattr(kern, "set_shared_memory_config"):
        kern.set_shared_memory_config(smem)
        return
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    max_dynamic_smem = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    _check_cuda(_get_gpu_runtime_library().cuFuncSetAttribute(kern.func, max_dynamic_smem, smem))


class KernelCache(Generic[K]):
    """NVRTC kernels compiled once per key (a device index and a spec), a failure remembered. Safe to share between
    threads: NVRTC runs without the GIL, so two threads may compile one key at once; both then get the kernel stored
    first, and its shared-memory limit only rises.

    Attributes:
        kernels: the compiled kernels by key.
        failed: why a key's kernel is not there (its compile error, or what a caller recorded).

    Example:
        >>> kern = cache.get((0, spec), lambda: torch.cuda._compile_kernel(src, name), smem=96 * 1024)
        >>> kern is None and cache.failed.get((0, spec))    # the compile error, if that was why
    """

    def __init__(self) -> None:
        self.kernels: dict[K, Any] = {}
        self.failed: dict[K, str] = {}
        self._smem: dict[K, int] = {}
        self._smem_lock = threading.Lock()  # the limit's check, raise and record, as one step

    def get(self, key: K, build: Callable[[], Any], smem: int = 0) -> Any | None:
        """The kernel of `key`, compiled by `build()` on first use, allowed `smem` bytes of dynamic shared
        memory; None when `key` failed before or now (the reason in `failed[key]`), or when it is not
        compiled yet while a CUDA graph is captured (compiling there would break the capture)."""
        kern = self.kernels.get(key)
        if kern is None:
            if key in self.failed or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
                return None
            try:
                kern = build()
            except Exception as err:  # noqa: BLE001 - no NVRTC, no CUDA_HOME for its includes, a compile error
                self.failed[key] = f"{type(err).__name__}: {str(err)[:300]}"
                return None
            kern = self.kernels.setdefault(key, kern)  # another thread's, if it stored one first
        with self._smem_lock:
            if smem > self._smem.get(key, 48 * 1024 - 1):
                raise_smem_limit(kern, smem)
                self._smem[key] = smem
        return kern
