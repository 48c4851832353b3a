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


def load_interpreted(name: str) -> ModuleType:
    """`fusegraph/runtime/kernels/<name>.py`, its Triton kernels in interpreter mode."""
    mod_name = f"_fg_interpreted_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    os.environ["TRITON_INTERPRET"] = "1"
    spec = importlib.util.spec_from_file_location(mod_name, KERNELS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module
