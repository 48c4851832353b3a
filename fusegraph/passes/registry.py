"""The passes `fusegraph opt` and `PassManager` know by name.

Each built-in entry imports its pass lazily, as `xdsl.transforms.get_all_passes` does, so
listing the passes does not import every pass module. Users add their own passes with
`register_pass` (directly, or from a plugin file given to `fusegraph opt --load-pass-plugin`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from xdsl.passes import ModulePass

PassT = TypeVar("PassT", bound=type[ModulePass])
_PASS_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")


def _canonicalize() -> type[ModulePass]:
    from fusegraph.passes.canonicalize import Canonicalize

    return Canonicalize


def _cse() -> type[ModulePass]:
    from fusegraph.passes.cse import CommonSubexpressionElimination

    return CommonSubexpressionElimination


def _dce() -> type[ModulePass]:
    from fusegraph.passes.dce import DeadCodeElimination

    return DeadCodeElimination


def _fold_act_order() -> type[ModulePass]:
    from fusegraph.passes.fold_act_order import FoldActOrderPermutation

    return FoldActOrderPermutation


def _fuse_add_rms_norm() -> type[ModulePass]:
    from fusegraph.passes.fuse_add_rms_norm import FuseAddRmsNorm

    return FuseAddRmsNorm


def _fuse_qkv() -> type[ModulePass]:
    from fusegraph.passes.fuse_qkv_projections import FuseQKVProjections

    return FuseQKVProjections


def _fuse_rope() -> type[ModulePass]:
    from fusegraph.passes.fuse_rope_split_store import FuseRopeSplitStore

    return FuseRopeSplitStore


def _fuse_silu_mul() -> type[ModulePass]:
    from fusegraph.passes.fuse_silu_mul import FuseSiluMul

    return FuseSiluMul


def _gptq_repack() -> type[ModulePass]:
    from fusegraph.passes.gptq_repack import GptqRepack

    return GptqRepack


def _unfuse_rope() -> type[ModulePass]:
    from fusegraph.passes.unfuse_rope_split_store import UnfuseRopeSplitStore

    return UnfuseRopeSplitStore


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "canonicalize": _canonicalize,
    "cse": _cse,
    "dce": _dce,
    "fold-act-order-permutation": _fold_act_order,
    "fuse-add-rms-norm": _fuse_add_rms_norm,
    "fuse-qkv-projections": _fuse_qkv,
    "fuse-rope-split-store": _fuse_rope,
    "fuse-silu-mul": _fuse_silu_mul,
    "gptq-repack": _gptq_repack,
    "unfuse-rope-split-store": _unfuse_rope,
}


_PLUGINS: set[str] = set()


def register_pass(pass_cls: PassT) -> PassT:
    """Make a user's pass known by its `name` to pipeline text and `fusegraph opt`.

    Usable as a class decorator. Registering the very same class again is a no-op (a plugin
    file imported twice); another class under a taken name is an error.

    Args:
        pass_cls: a `ModulePass` subclass whose `name` is kebab-case, e.g. "fold-mul-one".

    Returns:
        `pass_cls`, unchanged.

    Raises:
        TypeError: `pass_cls` is not a ModulePass subclass.
        ValueError: the name is missing, not kebab-case, or already taken by another pass.

    Example:
        >>> @register_pass
        ... @dataclass(frozen=True)
        ... class FoldMulOne(ModulePass):
        ...     name = "fold-mul-one"
        ...     def apply(self, ctx, op): ...
        >>> PassManager("fold-mul-one,dce").run(g)
    """
    if not (isinstance(pass_cls, type) and issubclass(pass_cls, ModulePass)):
        raise TypeError(f"register_pass: expected a ModulePass subclass, got {pass_cls!r}")
    name = getattr(pass_cls, "name", None)
    if not isinstance(name, str) or not _PASS_NAME.match(name):
        raise ValueError(
            f"register_pass: {pass_cls.__qualname__}.name must be a kebab-case string such as "
            f"'fold-mul-one', got {name!r}"
        )
    if (load := PASSES.get(name)) is not None:
        if name in _PLUGINS and load() is pass_cls:
            return pass_cls
        raise ValueError(
            f"register_pass: pass name {name!r} is already registered by {_owner(name)}; "
            f"pick another name (registering {pass_cls.__module__}.{pass_cls.__qualname__})"
        )
    PASSES[name] = lambda: pass_cls
    _PLUGINS.add(name)
    return pass_cls


def _owner(name: str) -> str:
    kind = "plugin" if name in _PLUGINS else "built-in"
    try:
        cls = PASSES[name]()
    except ImportError:
        return f"a {kind} pass"
    return f"{kind} pass {cls.__module__}.{cls.__qualname__}"


_LOADED_PLUGINS: dict[Path, ModuleType] = {}


class PassPluginError(ValueError):
    """A pass plugin file could not be loaded; the message names the file and the cause."""


def load_pass_plugin(path: str | Path) -> ModuleType:
    """Import a Python file that registers passes (`fusegraph opt --load-pass-plugin FILE.py`).

    The file calls `register_pass` (and may call `register_custom_op` so that IR using its
    ops parses). A file is imported once per process, however often it is named.

    Raises:
        PassPluginError: the file is missing, is not a `.py` file, or raised while importing.
    """
    resolved = Path(path).resolve()
    if (module := _LOADED_PLUGINS.get(resolved)) is not None:
        return module
    if not resolved.is_file() or resolved.suffix != ".py":
        raise PassPluginError(f"pass plugin {str(path)!r} is not a Python file")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    module_name = f"fusegraph_pass_plugin_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise PassPluginError(f"pass plugin {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their class's module up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise PassPluginError(f"pass plugin {str(path)!r} failed: {type(err).__name__}: {err}") from err
    _LOADED_PLUGINS[resolved] = module
    return module


def unregister_pass(name: str) -> None:
    """Forget a pass added with `register_pass` (built-in passes cannot be removed)."""
    if name not in _PLUGINS:
        raise ValueError(f"unregister_pass: {name!r} was not added with register_pass")
    _PLUGINS.discard(name)
    del PASSES[name]


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
