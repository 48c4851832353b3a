"""`gptq_cuda_launch.KernelCache`: each key compiled once, a failure remembered with its reason, the
shared-memory limit raised only upward (CPU: the kernel is a stand-in with `set_shared_memory_config`)."""

from __future__ import annotations

import threading
from typing import Any

from fusegraph.runtime.kernels.gptq_cuda_launch import KernelCache


class _Kernel:
    def __init__(self) -> None:
        self.smem: list[int] = []

    def set_shared_memory_config(self, smem: int) -> None:
        self.smem.append(smem)


def test_kernel_cache__compiles_once_and_raises_the_smem_limit_only_upward() -> None:
    cache: KernelCache[tuple[int, str]] = KernelCache()
    builds: list[_Kernel] = []

    def build() -> Any:
        builds.append(_Kernel())
        return builds[-1]

    first = cache.get((0, "a"), build, smem=96 * 1024)
    assert isinstance(first, _Kernel)
    assert cache.get((0, "a"), build, smem=64 * 1024) is first
    assert cache.get((0, "a"), build, smem=160 * 1024) is first
    assert cache.get((0, "a"), build) is first
    assert len(builds) == 1 and builds[0] is first and builds[0].smem == [96 * 1024, 160 * 1024]
    assert cache.get((1, "a"), build, smem=32 * 1024) is builds[1] and builds[1].smem == []  # under 48 KB
    assert cache.kernels == {(0, "a"): first, (1, "a"): builds[1]}


def test_kernel_cache__remembers_a_failure_and_its_reason() -> None:
    cache: KernelCache[str] = KernelCache()
    calls = []

    def broken() -> Any:
        calls.append(1)
        raise RuntimeError("nvrtc: error: identifier 'x' is undefined")

    assert cache.get("k", broken) is None
    assert cache.get("k", broken) is None
    assert len(calls) == 1
    assert cache.failed == {"k": "RuntimeError: nvrtc: error: identifier 'x' is undefined"}
    assert "k" not in cache.kernels


def test_kernel_cache__threads_compiling_one_key_share_the_kernel_whose_limit_was_raised() -> None:
    """Two threads miss the same key at once (NVRTC runs without the GIL): both get the kernel stored first, with
    the larger limit raised on it. Before, the second build replaced the first in the cache after the first had
    recorded its limit, so the kernel kept launched had 48 KB ("CUDA error: invalid argument" on the H200)."""
    cache: KernelCache[str] = KernelCache()
    both_building = threading.Barrier(2)
    builds: list[_Kernel] = []

    def build() -> Any:
        both_building.wait(timeout=10)  # both threads are past the cache lookup before either stores
        builds.append(_Kernel())
        return builds[-1]

    got: dict[int, Any] = {}

    def worker(i: int, smem: int) -> None:
        got[i] = cache.get("k", build, smem=smem)

    threads = [
        threading.Thread(target=worker, args=(i, smem)) for i, smem in enumerate((96 * 1024, 160 * 1024))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(builds) == 2 and got[0] is got[1] is cache.kernels["k"]
    kept = cache.kernels["k"]
    assert kept.smem == sorted(kept.smem) and kept.smem[-1] == 160 * 1024  # only ever raised, to the larger
    assert cache.get("k", build, smem=160 * 1024) is kept and len(builds) == 2
