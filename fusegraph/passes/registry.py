"""The passes `fusegraph opt` and `PassManager` know by name.

Each entry imports its pass lazily, as `xdsl.transforms.get_all_passes` does, so listing
the passes does not import every pass module.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _canonicalize() -> type[ModulePass]:
    from fusegraph.passes.canonicalize import Canonicalize

    return Canonicalize


def _cse() -> type[ModulePass]:
    from fusegraph.passes.cse import BufferAwareCSE

    return BufferAwareCSE


def _dce() -> type[ModulePass]:
    from fusegraph.passes.dce import BufferAwareDCE

    return BufferAwareDCE


def _fuse_qkv() -> type[ModulePass]:
    from fusegraph.passes.fuse_qkv_projections import FuseQKVProjections

    return FuseQKVProjections


def _fuse_rope() -> type[ModulePass]:
    from fusegraph.passes.fuse_rope_split_store import FuseRopeSplitStore

    return FuseRopeSplitStore


def _unfuse_rope() -> type[ModulePass]:
    from fusegraph.passes.unfuse_rope_split_store import UnfuseRopeSplitStore

    return UnfuseRopeSplitStore


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "canonicalize": _canonicalize,
    "cse": _cse,
    "dce": _dce,
    "fuse-qkv-projections": _fuse_qkv,
    "fuse-rope-split-store": _fuse_rope,
    "unfuse-rope-split-store": _unfuse_rope,
}


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Name -> loader of every pass whose module can be imported, sorted by name."""
    found = {}
    for name, load in sorted(PASSES.items()):
        try:
            load()
        except ImportError:  # a pass whose ops are not in this build yet
            continue
        found[name] = load
    return found


def pass_class(name: str) -> type[ModulePass]:
    """The pass class called `name`; a ValueError lists the known names."""
    known = available_passes()
    if name not in known:
        raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(known)}")
    return known[name]()
