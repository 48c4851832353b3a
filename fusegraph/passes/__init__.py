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
from fusegraph.passes.registry import available_passes, pass_class

__all__ = [
    "PassFailedError",
    "PassManager",
    "PassRecord",
    "PassStatistics",
    "PassVerifyError",
    "available_passes",
    "parse_pass_pipeline",
    "pass_class",
]
