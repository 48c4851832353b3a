"""Lazy package exports (PEP 562), shared by every package that re-exports names.

A package lists where each public name lives; the name is imported from there on first use
and then cached in the package, so the CLIs' `--help` imports neither torch nor xDSL.

Example:
    >>> __getattr__ = lazy_exports(__name__, {"Generator": "fusegraph.generate.generator"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `homes[name]` is the module that defines `name`
    (or, when it is `package.name`, the submodule itself)."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook
        if (home := homes.get(name)) is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
