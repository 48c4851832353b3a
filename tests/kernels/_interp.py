"""Load a fresh copy of a kernel module with `TRITON_INTERPRET=1`, so its kernels run on the CPU.

`triton.jit` reads TRITON_INTERPRET when it decorates a function, so a copy loaded under a
private name while the variable is set is interpreted, whatever else this process imported
before (the regular `fusegraph.runtime.kernels.*` modules stay as they were). The variable
stays set afterwards: the interpreter imports parts of triton lazily at the first launch and
they check it again. Tests run without a GPU, so nothing else loses by it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

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
    deps = {f"fusegraph.runtime.kernels.{d}": load_interpreted(d) for d in kernel_deps}
    os.environ["TRITON_INTERPRET"] = "1"
    spec = importlib.util.spec_from_file_location(mod_name, KERNELS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    import fusegraph.runtime.kernels  # noqa: F401 - the parent package, with the regular modules

    saved = {dep: sys.modules.get(dep) for dep in deps}
    sys.modules.update(deps)
    try:
        spec.loader.exec_module(module)
    finally:
        for dep, regular in saved.items():
            if regular is None:
                sys.modules.pop(dep, None)
            else:
                sys.modules[dep] = regular
    return module
