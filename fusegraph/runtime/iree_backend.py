"""The IREE backend: decomposed torch-mlir compiled by `iree-base-compiler`, run by
`iree-base-runtime` (driver `local-task` on the CPU, `cuda` on NVIDIA GPUs).

The call contract is the eager `CompiledGraph`'s: `model(*inputs)` takes torch tensors and
returns the graph outputs; each buffer input (the KV blocks) is updated in the caller's
tensor. The module updates it in place: the lowering marks written buffers mutable
(`torch.overwrite.tensor.contents`, which IREE ties to the argument's storage), and the
caller's tensor is handed over through DLPack, so no cache-sized copy happens on any call,
on the CPU or on CUDA (where the cache stays in GPU memory). The ragged metadata are checked
on the host first (`runtime/input_checks.py`): IREE has no bounds checks.

- **Dynamic dims.** Symbolic dims stay dynamic in the compiled module, so one compile serves
  every `total_seq_len` (and batch size).
- **Cache.** The `.vmfb` is cached on disk under a hash of the MLIR text, the compile flags
  and the compiler version: `cache_dir`, else `$FUSEGRAPH_CACHE_DIR`, else
  `~/.cache/fusegraph/iree`.
- **Weights** are uploaded once, at construction, and reused by every call.
- **Per call**, inputs cross by DLPack (no copy) and outputs are copied out; on CUDA the
  host also reads the metadata, for the checks, and the outputs pass through it (IREE's CUDA
  buffers do not export). `model.transfers` counts the bytes copied host<->device.
- **Integer and bf16 boundaries.** torch-mlir imports uint32 as `ui32` and lowers it to
  signless `i32`; IREE returns such outputs as int32, which are viewed back as uint32 here.
  Metadata values (row offsets, cache lengths, page ids) must stay below 2**31. bf16 crosses
  the boundary as `ml_dtypes.bfloat16` (bit-identical).
- **CUDA.** In iree-base-compiler 3.13.0 the flags that compile for an H100/H200 are
  `--iree-hal-target-device=cuda --iree-cuda-target=sm_89` (IREE has no sm_90 target details:
  `--iree-cuda-target=sm_90` fails with "missing GPU target"; `--iree-rocm-target=sm_90`, used
  before 2026-11-30, is the ROCm flag and left IREE's default sm_60); the CPU flags are `--iree-hal-target-device=local
  --iree-hal-local-target-device-backends=llvm-cpu` (`--iree-hal-target-device=llvm-cpu` is
  rejected as an unregistered device alias).

Example:
    >>> model = compile_iree(g, device="cpu", weights=attn.state_dict())
    >>> (y,) = model(x, row_offsets, kv_blocks, cache_lengths, lookup_table)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import evaluate_dim
from fusegraph.compiler.types import BufferType, TensorType, shaped_type
from fusegraph.runtime.eager import bind_weights, check_inputs
from fusegraph.runtime.input_checks import InputChecks, MetadataUse
from fusegraph.runtime.iree_compile import (
    IreeCompileError,
    compile_count,
    compile_graph,
    compile_vmfb,
    default_cache_dir,
    device_kind,
    target_flags,
)
from fusegraph.runtime.weight_checks import check_weights
from fusegraph.runtime.write_guard import DeviceWriteGuards, write_guards

# The compile side lives in iree_compile.py; its public names are the backend's too.
__all__ = [
    "IreeCompileError",
    "IreeCompiledGraph",
    "compile_count",
    "compile_iree",
    "compile_vmfb",
    "default_cache_dir",
    "device_kind",
    "from_iree",
    "target_flags",
    "to_numpy",
]

_DRIVERS = {"cpu": "local-task", "cuda": "cuda"}


class IreeCompiledGraph:
    """A graph compiled by IREE: `model(*inputs) -> tuple[Tensor, ...]`.

    With `inplace=True` (the default) the module takes each written buffer (the KV blocks)
    as a mutable argument and updates it in place: the caller's torch tensor is handed to
    IREE through DLPack without a copy (host memory on the CPU, device memory on CUDA), so
    only the new rows are written and nothing cache-sized is copied or returned. Tensor
    inputs cross the same way; outputs (activations) are copied out.
    `inplace=False` compiles the functional form (the cache is copied in and out).

    Attributes:
        graph: the compiled graph (a clone).
        pipeline: the pipeline text `fusegraph.compile` ran before (None: the graph as built).
        device: "cpu" or "cuda[:N]"; inputs must be on it, outputs come back on it.
        vmfb_path: the cached `.vmfb`.
        cache_hit: whether the `.vmfb` came from the cache (no iree-compile ran).
        mlir: the torch-dialect module that was compiled (None for `vmfb=`): decomposed, or on
            CUDA custom with the fused ops as custom dispatches (`mlir.mode`).
        inplace: whether buffers are updated in place.
        input_checks: the host metadata checks run before every call (on CUDA with
            `device_checks`, only their no-sync part, `check_host`).
        device_checks: on CUDA, the eager runtime's device checks (`write_guard.py`) replace
            the host metadata checks: launched before the call, their flag read after one
            stream sync, a refusal raised (same `ValueError`) before IREE runs. Default: when
            the module was compiled here with custom dispatches (`iree_dispatch`), whose
            kernels bound their own reads; IREE's code for the decomposed ops does not.
        transfers: bytes this object copied between host and device memory, cumulative,
            `{"h2d": n, "d2h": n}` (zero-copy DLPack hand-offs count nothing; the metadata
            read by the checks counts as d2h on CUDA).
        zero_copy: whether the last call handed every input over and copied outputs only on
            the host (False on CUDA, where outputs go through the host).
        copy_reason: why the last copy happened instead of a DLPack hand-off ("" if none).
        copied_inputs: the indices of the inputs the last call uploaded (copied) instead of
            handing over; e.g. tensors that are not 64-byte aligned, which IREE's CPU heap
            import refuses (`PagedKVCacheManager` pads its packed metadata views to 64 bytes).
    """

    def __init__(
        self,
        graph: Graph,
        device: str = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        extra_flags: Sequence[str] = (),
        target_cpu: str = "host",
        cuda_arch: str = "sm_90",
        inplace: bool = True,
        vmfb: str | os.PathLike[str] | None = None,
        device_checks: bool | None = None,
    ) -> None:
        from fusegraph.compiler.lowering.torch_mlir import buffer_outputs

        flags = [*target_flags(device, target_cpu, cuda_arch), *extra_flags]
        graph.verify()
        self.graph = graph.clone()
        self.pipeline: str | None = None
        self.device = device
        self.inplace = inplace
        self.input_types: list[TensorType | BufferType] = [shaped_type(a) for a in self.graph.block.args]
        self.output_types = [v.type for v in self.graph.outputs]
        self.buffer_inputs = list(buffer_outputs(self.graph))
        # IREE has no bounds checks: every ragged op's metadata must be checkable on the host.
        self.input_checks = InputChecks.for_graph(self.graph, strict=True)
        self._metadata = sorted({i for u in self.input_checks.uses for i in _metadata_inputs(u)})
        bound = bind_weights(self.graph.weights, weights or {}, "cpu")
        check_weights(self.graph, dict(zip(self.graph.weights, bound)))
        self.transfers = {"h2d": 0, "d2h": 0}
        self.zero_copy = True
        self.copy_reason = ""
        self.copied_inputs: list[int] = []
        self.mlir: Any = None
        if vmfb is not None:  # compiled elsewhere (e.g. for CUDA on a machine with the compiler)
            self.vmfb_path, self.cache_hit = Path(vmfb), True
        else:
            self.mlir, self.vmfb_path, self.cache_hit = compile_graph(
                self.graph, flags, cache_dir, inplace=inplace, cuda_arch=cuda_arch
            )
        on_cuda = torch.device(device).type == "cuda"
        if device_checks is None:
            device_checks = self.mlir is not None and self.mlir.mode == "custom"
        self.device_checks = on_cuda and device_checks
        guards = write_guards(self.graph) if self.device_checks else []
        self._device_guards = DeviceWriteGuards(guards) if guards else None
        self._load(bound)

    def _load(self, weights: list[torch.Tensor]) -> None:
        import iree.runtime as rt

        self._config = rt.Config(device=_hal_device(self.device))
        self._hal_device = self._config.device
        self._context = rt.SystemContext(config=self._config)
        self._context.add_vm_module(rt.VmModule.mmap(self._config.vm_instance, str(self.vmfb_path)))
        self._function = self._context.modules.module["main"]
        self._weights = [self._upload(w) for w in weights]  # once

    def _upload(self, tensor: torch.Tensor) -> Any:
        import iree.runtime as rt

        self._count("h2d", tensor)
        return rt.asdevicearray(self._hal_device, to_numpy(tensor))

    def _count(self, direction: str, tensor: torch.Tensor) -> None:
        if torch.device(self.device).type == "cuda":
            self.transfers[direction] += tensor.numel() * tensor.element_size()

    def _argument(self, x: torch.Tensor, keep: list[Any]) -> tuple[Any, bool]:
        """(the IREE argument for `x`, whether it aliases `x`): a zero-copy DLPack import,
        else an upload (a copy)."""
        x = x if x.is_contiguous() else x.contiguous()
        keep.append(x)  # the imported memory must outlive the call
        try:
            # public API that torch's stub leaves out of torch.utils.dlpack.__all__ (--strict only)
            capsule = torch.utils.dlpack.to_dlpack(x)  # type: ignore[attr-defined]
            return self._hal_device.from_dlpack_capsule(capsule), True
        except Exception as err:  # noqa: BLE001 - IREE raises plain RuntimeError/ValueError subclasses
            self.copy_reason = f"input DLPack import: {type(err).__name__}: {err}"
            return self._upload(x), False

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph; buffer inputs are updated in the caller's tensors."""
        dims = check_inputs(self.input_types, inputs, self.device)
        if self._device_guards is not None:  # CUDA: device checks, refused before IREE writes
            self.input_checks.check_host_and_perms(inputs, dims)  # a perm input: one host read per tensor
            self._device_guards.launch(inputs, dims)
            self._device_guards.publish(inputs)
            torch.cuda.current_stream(self.device).synchronize()  # IREE runs on its own stream
            self._device_guards.raise_if_refused(inputs)
            self.transfers["d2h"] += 64 * max(1, len(self._device_guards.caches))  # 8 flag words a cache
        else:
            self.input_checks.check(inputs, dims)  # before IREE sees (or writes) anything
            for i in self._metadata:
                self._count("d2h", inputs[i])  # the checks read the metadata on the host
            if torch.device(self.device).type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()  # IREE runs on its own stream
        keep: list[Any] = []
        args, aliased = zip(*(self._argument(x, keep) for x in inputs)) if inputs else ((), ())
        self.zero_copy = all(aliased)
        self.copied_inputs = [i for i, direct in enumerate(aliased) if not direct]
        if self.inplace:  # the module writes the outputs too, into tensors allocated here
            outputs = tuple(
                torch.empty(
                    [int(evaluate_dim(d, dims)) for d in t.shape],
                    dtype=t.dtype.to_torch(),
                    device=self.device,
                )
                for t in self.output_types
            )
            out_args, out_aliased = zip(*(self._argument(o, keep) for o in outputs)) if outputs else ((), ())
            self._function(*args, *self._weights, *out_args)  # synchronous: done when it returns
            for tensor, arg, direct in zip(outputs, out_args, out_aliased):
                if not direct:
                    self._count("d2h", tensor)
                    tensor.copy_(from_iree(_as_array(self._hal_device, arg), tensor.dtype, self.device))
            self.zero_copy = self.zero_copy and all(out_aliased)
            finals = [args[i] for i in self.buffer_inputs]
        else:
            results = self._function(*args, *self._weights)
            results = results if isinstance(results, (tuple, list)) else (results,)
            n = len(self.output_types)
            outputs = tuple(
                self._output(r, t.dtype.to_torch()) for r, t in zip(results[:n], self.output_types)
            )
            finals = list(results[n:])
        for index, final in zip(self.buffer_inputs, finals):
            if self.inplace and aliased[index]:
                continue  # IREE wrote the caller's memory
            buffer = inputs[index]
            host = from_iree(_as_array(self._hal_device, final), buffer.dtype, self.device)
            self._count("d2h", buffer)
            buffer.copy_(host)
        return outputs

    def _output(self, result: Any, dtype: torch.dtype) -> torch.Tensor:
        """A torch copy of an IREE result. Not a DLPack view: a tensor over IREE's memory
        would not keep that memory alive (it changed once the module was freed), and
        iree-base-runtime 3.13's CUDA allocator refuses to export its buffers anyway. On CUDA
        the copy goes through the host (counted in `transfers`)."""
        tensor = from_iree(result, dtype, self.device)
        if torch.device(self.device).type == "cuda":
            self.copy_reason = "outputs are copied through the host (IREE CUDA buffers do not export)"
            self.zero_copy = False
            self._count("d2h", tensor)
            self._count("h2d", tensor)
        return tensor

    def __repr__(self) -> str:
        return f"IreeCompiledGraph({self.graph.name!r}, device={self.device!r}, vmfb={str(self.vmfb_path)!r})"


def _metadata_inputs(use: MetadataUse) -> list[int]:
    return [i for i in (use.row_offsets, use.lengths, use.lookup_table) if i is not None]


def _as_array(device: Any, value: Any) -> Any:
    """A DeviceArray for an IREE result or argument (a HalBufferView or a DeviceArray)."""
    import iree.runtime as rt

    return value if isinstance(value, rt.DeviceArray) else rt.DeviceArray(device, value)


def compile_iree(
    graph: Graph,
    device: str = "cpu",
    weights: Mapping[str, torch.Tensor] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> IreeCompiledGraph:
    """Compile `graph` with IREE for `device`; see `IreeCompiledGraph`.

    Args:
        graph: the graph (custom ops are decomposed to aten for IREE).
        device: "cpu" (llvm-cpu, driver local-task) or "cuda" (sm_90 by default, driver cuda).
        weights: name -> tensor for every weight of the graph, exactly.
        cache_dir: where compiled `.vmfb`s are cached (default: `default_cache_dir()`).
        **kw: `extra_flags` (more iree-compile flags), `target_cpu`, `cuda_arch`.

    Returns:
        A callable with the eager `CompiledGraph`'s contract.
    """
    return IreeCompiledGraph(graph, device=device, weights=weights, cache_dir=cache_dir, **kw)


def _hal_device(device: str) -> Any:
    """The IREE HAL device for "cpu", "cuda" (the first GPU) or "cuda:N"."""
    import iree.runtime as rt

    kind, _, index = device.partition(":")
    driver = rt.get_driver(_DRIVERS[kind])
    infos = driver.query_available_devices()
    n = int(index or 0)
    if n >= len(infos):
        raise ValueError(
            f"compile_iree: {device!r}: IREE driver {_DRIVERS[kind]!r} sees {len(infos)} devices"
        )
    return driver.create_device(infos[n]["device_id"])


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous host array of `tensor`; bf16 becomes `ml_dtypes.bfloat16`, bit for bit."""
    host = tensor.detach().to("cpu").contiguous()
    if host.dtype == torch.bfloat16:
        import ml_dtypes

        return host.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return host.numpy()


def from_iree(array: Any, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A torch tensor of `dtype` on `device`, copied from an IREE DeviceArray. IREE returns
    unsigned tensors as signless (numpy int32 for uint32): reinterpret, same bits."""
    host = np.array(array.to_host(), copy=True)
    if dtype == torch.bfloat16:
        return torch.from_numpy(host.view(np.int16)).view(torch.bfloat16).to(device)
    want = torch.empty((), dtype=dtype).numpy().dtype
    if host.dtype != want:
        if host.dtype.itemsize != want.itemsize:
            raise TypeError(f"compile_iree: IREE returned {host.dtype}, expected {want}")
        host = host.view(want)
    return torch.from_numpy(host).to(device)
