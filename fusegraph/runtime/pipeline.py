"""The pass pipeline `fusegraph.compile` runs before execution.

`pipeline="default"` names this pipeline, resolved when `compile` is called:

    fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,[CUDA_EAGER_PASSES,]dce

- `fuse-qkv-projections` stacks the q, k and v projections of one input into one matmul;
- `fuse-rope-split-store` turns split -> rope -> store into one `fg.rope_split_store`;
- `canonicalize`, `cse`, `dce` clean up. The fusion passes run first because `canonicalize`
  folds `split(concat(...))` back into separate projections (docs/passes.md, Pipeline order);
- `gptq-repack` (the eager backend on CUDA, and only when a pass of that name is registered)
  rewrites GPTQ weights into the layout the CUDA kernels read; the runtime folds the repack
  into the weights once at compile time (`runtime/fold.py`);
- `fold-act-order-permutation` (right after it, when registered) makes the producer of an
  act-order matmul's input write it permuted (the MLP's gate/up weights, `fg.rms_norm perm`),
  so no per-call permutation kernel runs there. Off with `FUSEGRAPH_FOLD_ACT_ORDER=0` or
  `default_pipeline(..., off=[name])` (pass that text as `pipeline=`);
- `fuse-silu-mul` (when registered) makes the MLP's `silu(gate) * up` one op (one kernel), and
  `fuse-add-rms-norm` the residual add and the next norm; off with `FUSEGRAPH_FUSE_SILU_MUL=0` /
  `FUSEGRAPH_FUSE_ADD_RMS_NORM=0` or `default_pipeline(..., off=[name])`.

`pipeline=None` runs nothing (the graph as built); any other string is pipeline text for
`PassManager` (`"cse,dce"`, options as `name{opt=val}`).

Example:
    >>> graph, text, stats = run_pipeline(g, "default", backend="eager", device="cuda")
    >>> text
    'fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack,fold-act-order-permutation,fuse-silu-mul,fuse-add-rms-norm,dce'
"""

from __future__ import annotations

import os
from collections.abc import Collection

import torch

from fusegraph.compiler.graph import Graph
from fusegraph.passes.manager import PassManager, PassStatistics
from fusegraph.passes.registry import available_passes

__all__ = ["CUDA_EAGER_PASSES", "DEFAULT_PIPELINE", "default_pipeline", "resolve_pipeline", "run_pipeline"]

DEFAULT_PIPELINE = ("fuse-qkv-projections", "fuse-rope-split-store", "canonicalize", "cse", "dce")
"""The passes of `pipeline="default"` on every target (`CUDA_EAGER_PASSES` are added for eager CUDA)."""

_REPACK = "gptq-repack"
_FOLD = "fold-act-order-permutation"
FOLD_ENV = "FUSEGRAPH_FOLD_ACT_ORDER"
"""Set to 0 to leave `fold-act-order-permutation` out of the default pipeline."""

CUDA_EAGER_PASSES: tuple[tuple[str, str | None], ...] = (
    (_REPACK, None),
    (_FOLD, FOLD_ENV),  # only after gptq-repack: it reads the repack's perm
    ("fuse-silu-mul", "FUSEGRAPH_FUSE_SILU_MUL"),
    ("fuse-add-rms-norm", "FUSEGRAPH_FUSE_ADD_RMS_NORM"),
)
"""(pass, the environment variable that leaves it out when 0), inserted in this order before `dce`
for the eager backend on CUDA, each only when a pass of that name is registered."""


def default_pipeline(
    backend: str = "eager",
    device: str = "cpu",
    *,
    on: Collection[str] = (),
    off: Collection[str] = (),
) -> str:
    """The default pipeline's text for a target, read from the pass registry now.

    Args:
        backend: "eager" or "iree".
        device: "cpu", "cuda" or "cuda:N".
        on: names of `CUDA_EAGER_PASSES` to add whatever their variable says.
        off: names of `CUDA_EAGER_PASSES` to leave out (as their variable set to 0 does).

    Raises:
        ValueError: one of the variables is set to something other than 0 or 1, or a name is
            both in `on` and in `off`.

    Example:
        >>> default_pipeline("eager", "cpu")
        'fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce'
        >>> default_pipeline("eager", "cuda", off=["fuse-silu-mul", "fuse-add-rms-norm"])
        'fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack,fold-act-order-permutation,dce'
    """
    if both := sorted(set(on) & set(off)):
        raise ValueError(f"default_pipeline: {both} both in on and in off")
    passes = list(DEFAULT_PIPELINE)
    if backend != "eager" or torch.device(device).type != "cuda":
        return ",".join(passes)
    known = available_passes()
    for name, env in CUDA_EAGER_PASSES:
        wanted = name in on or (name not in off and _on_in_env(env))
        if wanted and name in known and (name != _FOLD or _REPACK in passes):
            passes.insert(passes.index("dce"), name)
    return ",".join(passes)


def _on_in_env(env: str | None) -> bool:
    if env is None:
        return True
    value = os.environ.get(env, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{env} must be 0 or 1, got {value!r}")
    return value == "1"


def resolve_pipeline(pipeline: str | None, backend: str = "eager", device: str = "cpu") -> str | None:
    """The pipeline text `pipeline` stands for: "default" expands, None stays None.

    Raises:
        ValueError: `pipeline` is neither None nor a string.
    """
    if pipeline is None:
        return None
    if not isinstance(pipeline, str):
        raise ValueError(
            f"compile: pipeline must be 'default', None or pipeline text such as 'cse,dce', "
            f"got {type(pipeline).__name__}"
        )
    return default_pipeline(backend, device) if pipeline == "default" else pipeline


def run_pipeline(
    graph: Graph, pipeline: str | None, backend: str = "eager", device: str = "cpu"
) -> tuple[Graph, str | None, PassStatistics | None]:
    """Run `pipeline` over a clone of `graph`; the caller's graph is not changed.

    Returns:
        (the graph to run, the pipeline text that ran or None, the pass statistics or None).

    Raises:
        ValueError: bad pipeline text (an unknown pass lists the known ones).
        PassFailedError, PassVerifyError: a pass failed; the message names it.
    """
    text = resolve_pipeline(pipeline, backend, device)
    clone = graph.clone()
    if not text:
        return clone, None, None
    stats = PassManager(text).run(clone)
    return clone, text, stats
