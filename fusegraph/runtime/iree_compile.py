"""Compiling for IREE: the target flags, the on-disk `.vmfb` cache, and the driver that
lowers a graph and compiles it (`compile_graph`), with IREE's diagnostics and a reproducer
on failure. `iree_backend.IreeCompiledGraph` loads what this produces.

Example:
    >>> mlir, vmfb, hit = compile_graph(graph, target_flags("cpu"))
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusegraph.compiler.graph import Graph
from fusegraph.runtime.iree_inplace import compile_inplace, consume_safe

_log = logging.getLogger(__name__)
_DRIVERS = ("cpu", "cuda")
_compile_count = 0


class IreeCompileError(RuntimeError):
    """iree-compile failed. The message has IREE's diagnostics, the saved input IR
    (`input_path`) and the `iree-compile` command that reproduces the failure."""

    def __init__(self, message: str, input_path: str, command: str) -> None:
        super().__init__(message)
        self.input_path = input_path
        self.command = command


def compile_count() -> int:
    """How many times this process invoked iree-compile (cache hits do not count)."""
    return _compile_count


# The CUDA archs iree-base-compiler 3.13 has target details for (KnownTargets.cpp); it has
# none for sm_90 (`--iree-cuda-target=sm_90` fails with "missing GPU target").
_IREE_CUDA_ARCHS = (60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 120, 121)


def iree_cuda_arch(cuda_arch: str) -> str:
    """The `--iree-cuda-target` for a device of compute capability `cuda_arch` ("sm_90"): the
    newest arch IREE 3.13 knows that is not newer (sm_90 -> sm_89, whose PTX the driver JITs for
    the H100/H200). `sm_90a` counts as sm_90.

    Example:
        >>> iree_cuda_arch("sm_90")
        'sm_89'
    """
    digits = cuda_arch.removeprefix("sm_").rstrip("a")
    if not cuda_arch.startswith("sm_") or not digits.isdigit() or int(digits) < _IREE_CUDA_ARCHS[0]:
        raise ValueError(f"target_flags: cuda_arch must be 'sm_<NN>' with NN >= 60, got {cuda_arch!r}")
    return f"sm_{max(a for a in _IREE_CUDA_ARCHS if a <= int(digits))}"


def target_flags(device: str, target_cpu: str = "host", cuda_arch: str = "sm_90") -> list[str]:
    """The iree-compile flags for `device` ("cpu" or "cuda[:N]") in iree-base-compiler 3.13.
    On CUDA the executable target is `iree_cuda_arch(cuda_arch)`."""
    kind = device_kind(device)
    if kind == "cpu":
        return [
            "--iree-hal-target-device=local",
            "--iree-hal-local-target-device-backends=llvm-cpu",
            f"--iree-llvmcpu-target-cpu={target_cpu}",
        ]
    if kind == "cuda":
        return ["--iree-hal-target-device=cuda", f"--iree-cuda-target={iree_cuda_arch(cuda_arch)}"]
    raise ValueError(f"compile_iree: device must be 'cpu' or 'cuda[:N]', got {device!r}")


def device_kind(device: str) -> str:
    """ "cpu" or "cuda" for a device string ("cuda:1" -> "cuda"); anything else -> "" (invalid)."""
    kind, _, index = device.partition(":")
    if kind not in _DRIVERS or (index and (kind != "cuda" or not index.isdigit())):
        return ""
    return kind


def default_cache_dir() -> Path:
    """`$FUSEGRAPH_CACHE_DIR`, else `~/.cache/fusegraph/iree`."""
    if env := os.environ.get("FUSEGRAPH_CACHE_DIR"):
        return Path(env)
    return Path.home() / ".cache" / "fusegraph" / "iree"


def compile_vmfb(
    mlir_text: str,
    flags: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    name: str = "graph",
    consume: bool = False,
) -> tuple[Path, bool]:
    """Compile torch-dialect MLIR to a `.vmfb`, through the on-disk cache.

    `consume=True` (the graph is `iree_inplace.consume_safe`) compiles through
    `iree_inplace.compile_inplace`: the entry consumes the buffers written in place, so IREE
    keeps no whole-buffer copy of them.

    Returns:
        The `.vmfb` path and whether it was a cache hit.

    Raises:
        IreeCompileError: iree-compile failed (with diagnostics and a reproducer).
    """
    from iree.compiler import version as compiler_version

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    marker = ["consume-written-buffers"] if consume else []
    key_text = "\n".join([compiler_version.VERSION, *flags, *marker, mlir_text])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    path = directory / f"{name}-{key}.vmfb"
    if path.exists():
        return path, True
    directory.mkdir(parents=True, exist_ok=True)
    repro = directory / f"{name}-{key}.input.mlir"
    binary = _run_iree_compile(mlir_text, flags, repro, consume)
    # Write then rename, so a concurrent reader never sees a partial file.
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".vmfb.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(binary)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any build output
    os.replace(tmp, path)
    return path, False


def _run_iree_compile(mlir_text: str, flags: Sequence[str], repro_path: Path, consume: bool = False) -> bytes:
    import iree.compiler as ireec
    from iree.compiler.tools.binaries import CompilerToolError

    global _compile_count
    _compile_count += 1
    try:
        if consume:
            return compile_inplace(mlir_text, flags)[0]
        vmfb: bytes = ireec.compile_str(  # bytes when no output_file is given (iree ships no stub)
            mlir_text, input_type="torch", target_backends=[], extra_args=list(flags)
        )
        return vmfb
    except CompilerToolError as err:
        repro_path.write_text(mlir_text)
        command = f"iree-compile --iree-input-type=torch {' '.join(flags)} {repro_path} -o out.vmfb"
        raise IreeCompileError(
            f"compile_iree: iree-compile failed:\n{err}\ninput IR saved to {repro_path}\n"
            f"reproduce with:\n  {command}",
            input_path=str(repro_path),
            command=command,
        ) from None


def compile_graph(
    graph: Graph,
    flags: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    inplace: bool = True,
    dispatches: bool | None = None,
    cuda_arch: str = "sm_90",
) -> tuple[Any, Path, bool]:
    """Lower `graph` for IREE and compile it (through the cache): the module
    `IreeCompiledGraph(vmfb=...)` expects. In place: buffers and outputs are mutable
    arguments (the outputs trailing, after the weights), nothing is returned.

    `dispatches` (default: when `flags` target CUDA, in place) keeps the fused ops as our
    Triton kernels, IREE custom dispatches (`iree_dispatch.add_dispatches`); a graph with an
    op that has none (`DispatchUnsupportedError`) is compiled decomposed instead, with a warning.
    Their PTX is compiled for `cuda_arch` (the device's compute capability, e.g. "sm_90").
    Otherwise the ops are decomposed into aten ops that IREE compiles itself.

    Returns:
        The `TorchMlirModule`, the `.vmfb` path, whether it was a cache hit.
    """
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir

    if dispatches is None:
        dispatches = inplace and "--iree-hal-target-device=cuda" in flags
    consume = inplace and consume_safe(graph)
    text = None
    if dispatches:
        from fusegraph.runtime.iree_dispatch import DispatchOptions, DispatchUnsupportedError, add_dispatches

        mlir = to_torch_mlir(
            graph, mode="custom", output_type="torch", inplace_buffers=inplace, outputs_as_args=inplace
        )
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            iree_cuda_arch(cuda_arch)  # refuses anything but "sm_<NN>"
            arch = int(cuda_arch.removeprefix("sm_").rstrip("a"))
            text = add_dispatches(mlir.text, directory / "ptx", DispatchOptions(arch=arch))
        except DispatchUnsupportedError as err:
            _log.warning("compile_graph: %s; compiling the decomposed form", err)
    if text is None:
        mlir = to_torch_mlir(
            graph, mode="decomposed", output_type="torch", inplace_buffers=inplace, outputs_as_args=inplace
        )
        text = mlir.text
    path, hit = compile_vmfb(text, flags, cache_dir, _stem(graph.name), consume=consume)
    return mlir, path, hit


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name or "graph")
