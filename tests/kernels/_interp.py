"""Load a fresh copy of a kernel module with `TRITON_INTERPRET=1`, so its kernels run on the CPU.

`triton.jit` reads TRITON_INTERPRET when it decorates a function, so a copy loaded under a
private name while the variable is set is interpreted, whatever else this process imported
before (the regular `fusegraph.runtime.kernels.*` modules stay as they were). The variable is
set only while the copy executes and while an interpreted kernel runs (the interpreter
re-executes a kernel's source at its first launch), and the regular modules are imported
before it is set, so kernels that later tests run on CUDA tensors are never interpreted (an
interpreted kernel given CUDA tensors fails).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

KERNELS = Path(__file__).resolve().parents[2] / "fusegraph" / "runtime" / "kernels"


def load_interpreted(name: str, kernel_deps: tuple[str, ...] = ()) -> ModuleType:
    """`fusegraph/runtime/kernels/<name>.py`, its Triton kernels in interpreter mode.

    `kernel_deps` names sibling modules holding kernels that this one imports (for example
    `gptq_matmul` launches the kernels of `gptq_kernels`): they are loaded interpreted first and
    stand in for the regular modules while `name` executes, so its imports bind to them.
    """
    mod_name = f"_fg_interpreted_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    # The regular (compiled) modules first, while TRITON_INTERPRET is unset: a module that is
    # first imported while it is set would be interpreted for the whole process, CUDA runs too.
    import fusegraph.runtime.kernels  # noqa: F401 - the parent package, with the regular modules

    deps = {f"fusegraph.runtime.kernels.{d}": load_interpreted(d) for d in kernel_deps}
    spec = importlib.util.spec_from_file_location(mod_name, KERNELS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    saved = {dep: sys.modules.get(dep) for dep in deps}
    sys.modules.update(deps)
    _interpret_while_running()
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec.loader.exec_module(module)
    finally:
        _restore("TRITON_INTERPRET", previous)
        for dep, regular in saved.items():
            if regular is None:
                sys.modules.pop(dep, None)
            else:
                sys.modules[dep] = regular
    return module


def _interpret_while_running() -> None:
    """Interpret around each interpreted launch only: set TRITON_INTERPRET (the interpreter
    re-executes a kernel's source at its first launch, and `triton.jit` reads the variable
    again then), and stand interpreted copies in for triton.language's own `@jit` functions
    (`tl.cdiv`, ...), which were compiled-mode when triton was imported without the variable."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if getattr(InterpretedFunction.run, "_fg_sets_interpret", False):
        return
    run = InterpretedFunction.run
    swaps = [
        (module, name, value, InterpretedFunction(value.fn))
        for module in (tl, tl.standard)
        for name, value in vars(module).items()
        if isinstance(value, JITFunction)
    ]

    # What the interpreter patches while a kernel runs (triton.language and its tensor and dtype
    # classes). Some triton versions leave those patches in place when a launch raises, which
    # breaks every kernel compiled later in the process; they are put back here regardless.
    patched = [tl, tl.core, tl.math, tl.standard, tl.core.tensor, tl.core.dtype]
    patched += [c for c in (getattr(tl.core, "tensor_descriptor_base", None),) if c is not None]

    def run_interpreted(self: Any, *args: Any, **kwargs: Any) -> Any:
        previous = os.environ.get("TRITON_INTERPRET")
        saved = [(obj, dict(vars(obj))) for obj in patched]
        os.environ["TRITON_INTERPRET"] = "1"
        for module, name, _, interpreted in swaps:
            setattr(module, name, interpreted)
        try:
            return run(self, *args, **kwargs)
        finally:
            for obj, attrs in saved:
                _put_back(obj, attrs)
            _restore("TRITON_INTERPRET", previous)

    run_interpreted._fg_sets_interpret = True  # type: ignore[attr-defined]
    InterpretedFunction.run = run_interpreted  # type: ignore[method-assign]


def _put_back(obj: Any, attrs: dict[str, Any]) -> None:
    """Make `obj`'s own attributes what `attrs` holds again: changed ones are set back, and on
    a class added ones are dropped (the names the interpreter adds to a module's globals stay:
    its rewritten functions look them up)."""
    now = vars(obj)
    for name in [n for n in now if n not in attrs] if isinstance(obj, type) else []:
        delattr(obj, name)
    for name, value in attrs.items():
        if now.get(name) is not value:
            setattr(obj, name, value)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
