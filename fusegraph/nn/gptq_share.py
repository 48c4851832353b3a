"""The act-order stacking rule: GPTQ projections of one input share one `g_idx` weight when
their loaded `g_idx` tensors are equal, so `fuse-qkv-projections` can stack them.

GPTQ quantizes q, k and v (and an MLP's gate and up) from the same inputs, so act-order
gives them one permutation and equal `g_idx` (MAX uses only q's). `fg.qmatmul.gptq` stacks
along N only when every projection reads the *same* g_idx value; the pass never sees tensor
values, so the layer decides once weights are loaded: equal tensors -> the later projections
emit the first one's `g_idx` weight (and `state_dict()` drops their copies); unequal -> each
keeps its own, and the pass keeps them apart with the reason "g_idx is a different value".
`g_idx_mismatch` states the rule on the tensors; `load_model` stacks a layer's q/k/v (gate/up)
weights by it too.

Example:
    >>> class Block(Module):
    ...     def _on_load(self) -> None:  # after every load_state_dict
    ...         self.g_idx_sharing = share_equal_g_idx(self, ["gate_proj", "up_proj"])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusegraph.nn.layer import Module
from fusegraph.nn.linear import GPTQLinear


def share_equal_g_idx(parent: Module, names: Sequence[str]) -> str | None:
    """Make `parent`'s act-order GPTQ projections `names` share the first one's `g_idx` weight
    when all loaded `g_idx` tensors are equal; otherwise leave each its own.

    Args:
        parent: The module holding the projections as attributes.
        names: Attribute names, the first being the one whose weight is shared (q_proj, gate_proj).

    Returns:
        None when shared, else why not (no act order, not loaded, or where the values differ).
    """
    projections = [getattr(parent, n, None) for n in names]
    for p in projections[1:]:
        if isinstance(p, Module):
            p.alias("g_idx", None)
    if not all(isinstance(p, GPTQLinear) and p.quant_config.desc_act for p in projections):
        return "not all act-order (desc_act) GPTQ projections: no g_idx in the graph to share"
    gptq = [p for p in projections if isinstance(p, GPTQLinear)]
    if why := g_idx_mismatch(names, [p._values.get("g_idx") for p in gptq]):
        return why
    for p in gptq[1:]:
        p.alias("g_idx", gptq[0])
    return None


def g_idx_mismatch(names: Sequence[str], values: Sequence[torch.Tensor | None]) -> str | None:
    """Why the loaded `g_idx` tensors `values` of projections `names` are not one value, or None
    when they are (the rule `share_equal_g_idx` and `load_model`'s stacking apply).

    Example:
        >>> g_idx_mismatch(["q_proj", "k_proj"], [torch.tensor([0, 1]), torch.tensor([0, 0])])
        'k_proj.g_idx differs from q_proj.g_idx (first at k=1: 0 vs 1)'
    """
    first = values[0]
    if first is None or any(v is None for v in values):
        return "g_idx not loaded"
    for name, value in zip(names[1:], values[1:], strict=True):
        assert value is not None
        if value.shape != first.shape:
            return f"{name}.g_idx shape {list(value.shape)} != {names[0]}.g_idx shape {list(first.shape)}"
        if not torch.equal(value, first):
            k = int((value != first).nonzero()[0, 0])
            return f"{name}.g_idx differs from {names[0]}.g_idx (first at k={k}: {int(value[k])} vs {int(first[k])})"
    return None
