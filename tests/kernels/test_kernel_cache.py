"""`gptq_cuda_launch.KernelCache`: each key compiled once, a failure remembered with its reason, the
shared-memory limit raised only upward (CPU: the kernel is a stand-in with `set_shared_memory_config`)."""

from __future__ import annotations

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
