"""Passes over fg graphs: the PassManager, shared pattern helpers, and one file per pass.

Example:
    >>> from fusegraph.passes import PassManager
    >>> stats = PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(g)
    >>> print(stats)
"""

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
