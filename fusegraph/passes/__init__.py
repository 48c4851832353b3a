"""Passes over fg graphs: the PassManager, shared pattern helpers, and one file per pass.

Example:
    >>> from fusegraph.passes import PassManager
    >>> stats = PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(g)
    >>> print(stats)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusegraph.passes.manager import (
        PassFailedError,
        PassManager,
        PassRecord,
        PassStatistics,
        PassVerifyError,
        parse_pass_pipeline,
    )
    from fusegraph.passes.registry import (
        PassPluginError,
        available_passes,
        load_pass_plugin,
        pass_class,
        register_pass,
        unregister_pass,
    )

_MANAGER = (
    "PassFailedError",
    "PassManager",
    "PassRecord",
    "PassStatistics",
    "PassVerifyError",
    "parse_pass_pipeline",
)


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `fusegraph opt --help` imports this package but needs neither xDSL nor torch.
    if name in _MANAGER:
        return getattr(importlib.import_module("fusegraph.passes.manager"), name)
    if name in __all__:
        return getattr(importlib.import_module("fusegraph.passes.registry"), name)
    raise AttributeError(f"module 'fusegraph.passes' has no attribute {name!r}")


__all__ = [
    "PassFailedError",
    "PassManager",
    "PassPluginError",
    "PassRecord",
    "PassStatistics",
    "PassVerifyError",
    "available_passes",
    "load_pass_plugin",
    "parse_pass_pipeline",
    "pass_class",
    "register_pass",
    "unregister_pass",
]
