"""`Module`, the base of the layers, and `LayerList`, a stack that prefixes names.

A module owns *parameters* (name -> `ParamSpec`) and child modules. A child assigned as an
attribute (`self.q_proj = Linear(...)`) is named after the attribute; the graph weight of a
parameter is named by the full dotted path from the root module, e.g.
`layers.3.self_attn.q_proj.qweight`. `state_dict()` and `load_state_dict()` use names relative
to the module they are called on, as torch does, so at the root they equal the graph's names.

Shared objects with a `state_dict()` of globally named tensors (the rope table) are registered
with `_share(...)`: their entries join `state_dict()` unprefixed.

A checkpoint may hold tensors a module's graph does not need (a `desc_act=False` GPTQ layer's
trivial `g_idx`). Such a name is registered with `_accept(name, check)`: `load_state_dict`
accepts it, runs `check(relative_name, tensor)` (which raises a ValueError naming the tensor
when the value is not the one the graph assumes), and drops it; `state_dict()` never has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import torch

from fusegraph.compiler import DeviceRef, DType, Graph, TensorType, TensorValue


class SharedState(Protocol):
    """An object shared by several modules whose `state_dict()` names tensors globally (the rope table)."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class ParamSpec:
    """The declared type of one parameter."""

    shape: tuple[int, ...]
    dtype: DType
    device: DeviceRef

    @property
    def tensor_type(self) -> TensorType:
        """The graph weight's type."""
        return TensorType(self.dtype, list(self.shape), self.device)


class Module:
    """Base of fusegraph layers: named parameters, children, and their state."""

    _params: dict[str, ParamSpec]
    _children: dict[str, Module]
    _values: dict[str, torch.Tensor]
    _shared: list[SharedState]
    _accepted: dict[str, Callable[[str, torch.Tensor], None]]
    _aliases: dict[str, Module]
    _prefix: str

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_shared", [])
        object.__setattr__(self, "_accepted", {})
        object.__setattr__(self, "_aliases", {})
        object.__setattr__(self, "_prefix", "")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Module):
            self._children[name] = value
            value._set_prefix(f"{self._prefix}{name}.")
        object.__setattr__(self, name, value)

    def _set_prefix(self, prefix: str) -> None:
        object.__setattr__(self, "_prefix", prefix)
        for name, child in self._children.items():
            child._set_prefix(f"{prefix}{name}.")

    def _declare(self, name: str, shape: Sequence[int], dtype: DType, device: DeviceRef) -> None:
        self._params[name] = ParamSpec(tuple(int(s) for s in shape), dtype, device)

    def _share(self, obj: SharedState) -> None:
        self._shared.append(obj)

    def _accept(self, name: str, check: Callable[[str, torch.Tensor], None]) -> None:
        """Let checkpoints hold `name` although the graph does not use it: `load_state_dict`
        calls `check(relative_name, tensor)` on it, then drops it."""
        self._accepted[name] = check

    def alias(self, name: str, owner: Module | None) -> None:
        """Emit parameter `name` as `owner`'s parameter of the same name (which holds an equal
        tensor, e.g. a shared GPTQ g_idx), or as this module's own again (None). An aliased
        parameter is still loaded and checked, but `state_dict()` leaves it out: the graph does
        not name it."""
        if owner is None:
            self._aliases.pop(name, None)
        else:
            self._aliases[name] = owner

    def weight(self, name: str) -> TensorValue:
        """Add parameter `name` to the current graph as a weight named by its full path."""
        owner = self._aliases.get(name, self)
        return Graph.current().add_weight(owner._prefix + name, self._params[name].tensor_type)

    def _on_load(self) -> None:
        """Called on this module and every descendant after `load_state_dict` binds values
        (e.g. to decide which equal tensors the graph can share); a no-op by default."""

    # --- state -------------------------------------------------------------------------
    def named_params(self) -> Iterator[tuple[str, ParamSpec]]:
        """Every parameter of this module and its children, by relative dotted name."""
        yield from self._params.items()
        for child_name, child in self._children.items():
            for name, spec in child.named_params():
                yield f"{child_name}.{name}", spec

    def named_accepted(self) -> Iterator[tuple[str, Callable[[str, torch.Tensor], None]]]:
        """Checkpoint-only names (checked and dropped on load) of this module and its children."""
        yield from self._accepted.items()
        for child_name, child in self._children.items():
            for name, check in child.named_accepted():
                yield f"{child_name}.{name}", check

    def _shared_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for obj in self._shared:
            state.update(obj.state_dict())
        for child in self._children.values():
            state.update(child._shared_state())
        return state

    def _local_state(self) -> dict[str, torch.Tensor]:
        state = dict(self._values)
        for child_name, child in self._children.items():
            state.update({f"{child_name}.{k}": v for k, v in child._local_state().items()})
        return state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors this module's graph weights name (parameters and shared tables).

        Raises:
            RuntimeError: A parameter has not been loaded.
        """
        if missing := [n for n, _ in self.named_params() if n not in self._local_state()]:
            raise RuntimeError(f"{type(self).__name__}: parameters not loaded: {missing}")
        aliased = set(self._aliased())
        local = {k: v for k, v in self._local_state().items() if k not in aliased}
        return {**local, **self._shared_state()}

    def _aliased(self) -> Iterator[str]:
        """Relative names of the parameters emitted under another module's weight."""
        yield from self._aliases
        for child_name, child in self._children.items():
            yield from (f"{child_name}.{n}" for n in child._aliased())

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Bind parameter values by relative name, checking presence, shape and dtype.

        Entries naming shared tables (`rope.freqs_cis`) are accepted and ignored: the table
        is derived from the rope settings. Checkpoint-only entries (`_accept`, e.g. the trivial
        `g_idx` of a `desc_act=False` GPTQ layer) are optional, checked, and dropped.

        Raises:
            ValueError: A tensor is missing, has the wrong shape or dtype, or (strict) a name is
                not a parameter, or a checkpoint-only tensor fails its check; the message names
                the tensor.
        """
        specs, accepted = dict(self.named_params()), dict(self.named_accepted())
        known = set(specs) | set(accepted) | set(self._shared_state())
        if strict and (extra := sorted(set(state) - known)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected tensors {extra}")
        for name, spec in specs.items():
            if name not in state:
                raise ValueError(f"{type(self).__name__}.load_state_dict: missing tensor {name!r}")
            _check_tensor(name, state[name], spec)
        for name, check in accepted.items():
            if name in state:
                check(name, state[name])
        for name in specs:
            self._assign(name, state[name])
        self._loaded()

    def _loaded(self) -> None:
        for child in self._children.values():
            child._loaded()
        self._on_load()

    def _assign(self, name: str, value: torch.Tensor) -> None:
        module, leaf = self, name
        while leaf not in module._params:
            head, leaf = leaf.split(".", 1)
            module = module._children[head]
        module._values[leaf] = value.detach()


def _check_tensor(name: str, value: object, spec: ParamSpec) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"tensor {name!r}: expected a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != spec.shape:
        raise ValueError(f"tensor {name!r}: shape {list(value.shape)} != expected {list(spec.shape)}")
    if value.dtype != spec.dtype.to_torch():
        raise ValueError(f"tensor {name!r}: dtype {value.dtype} != expected {spec.dtype.to_torch()}")


_M = TypeVar("_M", bound=Module)


class LayerList(Module, Generic[_M]):
    """A sequence of modules named `0`, `1`, ...; a parent attribute `layers` gives
    `layers.3.self_attn.q_proj.qweight`. Indexing and iteration give the modules' own type.

    Example:
        >>> class Block(Module):
        ...     def __init__(self, attn): super().__init__(); self.self_attn = attn
        >>> stack = LayerList([Block(a) for a in attns])
    """

    def __init__(self, layers: Sequence[_M]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, index: int) -> _M:
        return cast(_M, list(self._children.values())[index])  # the children are the layers given

    def __iter__(self) -> Iterator[_M]:
        return iter(cast(list[_M], list(self._children.values())))
