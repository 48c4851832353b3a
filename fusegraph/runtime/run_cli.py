"""`fusegraph run`: run a text IR graph on random inputs, optionally checked against eager CPU.

Symbolic dims get small sizes. When the graph's inputs follow the paged-attention contract
(row offsets, cache lengths, lookup table, kv_blocks), the inputs come from a
`PagedKVCacheManager`: a ragged prefill of a few sequences, then `--steps` decode steps, so
the metadata is always valid. Weights are random (GPTQ `g_idx` valid) unless `--weights`
names a safetensors file.

Example:
    $ fusegraph run model.mlir --backend iree --device cpu --check
    $ fusegraph run model.mlir --backend eager --device cuda --check --weights model.safetensors
    $ fusegraph run model.mlir --pipeline none        # the graph as written, no passes
    $ fusegraph run model.mlir --device cuda --cuda-graphs --profile
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the compiler are imported when the command runs, not for --help
    import torch

    from fusegraph.compiler.dims import Dim
    from fusegraph.compiler.graph import Graph
    from fusegraph.compiler.types import BufferType, TensorType

# Operand names of the paged ops -> the role of a graph input passed there.
_ROLES = {
    "input_row_offsets": "row_offsets",
    "cache_lengths": "cache_lengths",
    "start_pos": "cache_lengths",
    "lookup_table": "lookup_table",
    "kv_blocks": "kv_blocks",
}
_TOLERANCE = {"torch.float32": 1e-4, "torch.float16": 2e-2, "torch.bfloat16": 3e-2}  # by str(dtype)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the `run` subcommand to the `fusegraph` CLI."""
    p = subparsers.add_parser("run", help="run a text IR graph on random inputs (eager or IREE)")
    p.add_argument("file", help="input IR file")
    p.add_argument("--backend", choices=("eager", "iree"), default="eager")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--check", action="store_true", help="compare with eager CPU; print the max error")
    p.add_argument("--weights", default=None, help="a .safetensors file with the graph's weights")
    p.add_argument("--steps", type=int, default=2, help="decode steps after the prefill (paged graphs)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE", help="bind a symbolic dim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda-graphs", action="store_true", help="eager on CUDA: capture and replay CUDA graphs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the steps, profile the last one: host overhead per call and device time per kernel",
    )
    p.add_argument(
        "--pipeline",
        default="default",
        help="passes run before execution: 'default', 'none', or pipeline text such as 'cse,dce' "
        "(--check compares with the graph as written, run on eager CPU)",
    )
    p.add_argument(
        "--tol", type=float, default=None, help="max |err|/max(1,|ref|) allowed (default by dtype)"
    )
    p.set_defaults(func=run_graph_cli)
    return p


def run_graph_cli(args: argparse.Namespace) -> int:
    """Run the graph; with --check, return 1 if any error exceeds the tolerance."""
    from fusegraph.dialect import parse, read_ir_file

    try:
        graph = parse(read_ir_file(args.file), filename=args.file)  # non-UTF-8: file:line:col
        dims = _parse_dims(args.dim)
        weights = load_weights(args.weights, graph) if args.weights else random_weights(graph, args.seed)
        worst = run_and_check(graph, weights, args, dims)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"fusegraph run: error: {err}", file=sys.stderr)
        print(f"reproduce with: {shlex.join(['fusegraph', 'run', *sys.argv[2:]])}", file=sys.stderr)
        return 1
    if worst is None:
        return 0
    error, tol = worst
    print(f"max error: {error:.3e} (tolerance {tol:.1e}): {'OK' if error <= tol else 'FAIL'}")
    return 0 if error <= tol else 1


def _parse_dims(specs: list[str]) -> dict[str, int]:
    dims = {}
    for spec in specs:
        name, sep, size = spec.partition("=")
        if not sep or not size.isdigit():
            raise ValueError(f"--dim expects NAME=SIZE, got {spec!r}")
        dims[name] = int(size)
    return dims


def load_weights(path: str, graph: Graph) -> dict[str, torch.Tensor]:
    """The graph's weights from a safetensors file (no pickle); extra tensors are ignored."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    return {name: tensors[name] for name in graph.weights if name in tensors}


def random_weights(graph: Graph, seed: int) -> dict[str, torch.Tensor]:
    """Random weights by type: floats ~ N(0, 0.1²) (GPTQ scales positive), ints random bits,
    and a valid `g_idx` (k -> its group) for every `*.g_idx`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, t in graph.weights.items():
        shape = [_static(name, d) for d in t.shape]
        dtype = t.dtype.to_torch()
        if name.endswith("g_idx"):
            groups = _groups_for(graph, name, shape[0])
            weights[name] = (torch.arange(shape[0]) * groups // shape[0]).to(dtype)
        elif dtype.is_floating_point:
            value = torch.randn(shape, generator=gen) * 0.1
            weights[name] = (value.abs() + 0.01 if name.endswith("scales") else value).to(dtype)
        else:  # random bits: packed GPTQ words use all of them
            info = torch.iinfo(dtype)
            weights[name] = torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(
                dtype
            )
    return weights


def _groups_for(graph: Graph, g_idx_name: str, k: int) -> int:
    scales = graph.weights.get(g_idx_name.removesuffix("g_idx") + "scales")
    return _static(g_idx_name, scales.shape[0]) if scales is not None else 1


def _static(name: str, d: Dim) -> int:
    if not d.is_static:
        raise ValueError(f"weight {name!r} has a symbolic dim {d}; weights must be static")
    return d.value


def input_roles(graph: Graph) -> dict[int, str]:
    """Graph input index -> paged-attention role, from the operands the inputs feed."""
    args = list(graph.block.args)
    roles: dict[int, str] = {}
    for op in graph.block.ops:
        for name, _ in type(op).get_irdl_definition().operands:
            value = getattr(op, name, None)
            if name in _ROLES and value in args:
                roles[args.index(value)] = _ROLES[name]
    return roles


@dataclass
class _Plan:
    """The steps to run: token counts per step (paged) or a single step."""

    steps: list[list[int]] = field(default_factory=list)
    manager_params: Any = None
    num_blocks: int = 0


def run_and_check(
    graph: Graph, weights: dict[str, torch.Tensor], args: argparse.Namespace, dims: dict[str, int]
) -> tuple[float, float] | None:
    """Run every step on the chosen backend (and on eager CPU with --check); prints a line
    per step and returns (max error, tolerance) when checking."""
    import fusegraph

    if args.profile and args.backend != "eager":
        raise ValueError(f"--profile needs --backend eager, got --backend {args.backend}")
    pipeline = None if args.pipeline == "none" else args.pipeline
    options = {"cuda_graphs": True} if args.cuda_graphs else {}
    model = fusegraph.compile(
        graph, backend=args.backend, device=args.device, weights=weights, pipeline=pipeline, **options
    )
    print(f"pipeline: {getattr(model, 'pipeline', None) or 'none (the graph as written)'}")
    reference = (
        fusegraph.compile(graph, backend="eager", device="cpu", weights=weights, pipeline=None)
        if args.check
        else None
    )
    roles = input_roles(graph)
    plan = _plan(graph, roles, args.steps)
    runs = [_Runner(graph, roles, plan, dims, args.device, args.seed)]
    if reference is not None:
        runs.append(_Runner(graph, roles, plan, dims, "cpu", args.seed))
    worst, tol = 0.0, args.tol
    for step, tokens in enumerate(plan.steps):
        inputs = [r.inputs(step, tokens) for r in runs]
        outputs = model(*inputs[0])
        line = f"step {step}: " + ", ".join(f"{list(o.shape)} {o.dtype}" for o in outputs)
        if reference is not None:
            expected = reference(*inputs[1])
            errors = _errors(outputs, expected) + _errors(
                runs[0].buffers(inputs[0]), runs[1].buffers(inputs[1])
            )
            worst = max([worst, *errors])
            tol = tol if tol is not None else max(_TOLERANCE.get(str(o.dtype), 1e-4) for o in expected)
            line += f"; max|err|/max(1,|ref|) {max(errors):.3e}"
        print(line + (f" (tokens {tokens})" if tokens else ""))
        if args.profile and step == len(plan.steps) - 1:
            _profile(model, inputs[0])
        for r in runs:
            r.commit(tokens)
    return (worst, tol if tol is not None else 1e-4) if reference is not None else None


def _profile(model: Any, inputs: list[torch.Tensor]) -> None:
    """Print the profile of one step (the same inputs again: it rewrites the same cache slots)."""
    print(model.profile(*inputs))


def _errors(got: Any, want: Any) -> list[float]:
    return [
        (g.detach().cpu().double() - w.double()).abs().max().item() if g.numel() else 0.0
        for g, w in zip(got, want)
    ]


def _plan(graph: Graph, roles: dict[int, str], steps: int) -> _Plan:
    """A ragged prefill of 3 sequences then `steps` decode steps, if the graph is paged."""
    kv = [i for i, r in roles.items() if r == "kv_blocks"]
    if not kv or "row_offsets" not in roles.values():
        return _Plan(steps=[[]])
    from fusegraph.compiler.types import buffer_type

    kv_type = buffer_type(graph.block.args[kv[0]])
    num_blocks, _, num_layers, page_size, n_kv_heads, head_dim = (
        _static("kv_blocks", d) for d in kv_type.shape
    )
    params = SimpleNamespace(
        dtype=kv_type.dtype,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        num_layers=num_layers,
        page_size=page_size,
    )
    capacity = (num_blocks // 3) * page_size
    if capacity < steps + 2:
        raise ValueError(f"kv_blocks {kv_type}: too small for 3 sequences of {steps + 2} tokens")
    prefill = [min(5, capacity - steps), min(3, capacity - steps), 1]
    return _Plan(steps=[prefill] + [[1, 1, 1]] * steps, manager_params=params, num_blocks=num_blocks)


class _Runner:
    """Inputs for one backend: its own KV cache manager, the same random data per seed."""

    def __init__(
        self, graph: Graph, roles: dict[int, str], plan: _Plan, dims: dict[str, int], device: str, seed: int
    ) -> None:
        from fusegraph.compiler.devices import DeviceRef
        from fusegraph.compiler.types import shaped_type
        from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

        self.types = [shaped_type(a) for a in graph.block.args]
        self.roles, self.dims, self.device, self.seed = roles, dims, device, seed
        self.manager: PagedKVCacheManager | None = None
        self.seqs: list[int] = []
        if plan.manager_params is not None:
            ref = DeviceRef.CPU() if device == "cpu" else DeviceRef.GPU(int(device.partition(":")[2] or 0))
            self.manager = PagedKVCacheManager(plan.manager_params, plan.num_blocks, devices=[ref])
            capacity = (plan.num_blocks // 3) * plan.manager_params.page_size
            self.seqs = [self.manager.claim(max_len=capacity) for _ in range(3)]

    def inputs(self, step: int, tokens: list[int]) -> list[torch.Tensor]:
        """The inputs of `step`: paged metadata from the manager, the rest random."""
        import torch

        meta = self._paged(tokens)
        sizes = self._sizes(meta, tokens)
        gen = torch.Generator().manual_seed(self.seed * 1000 + step)
        inputs = []
        for i, t in enumerate(self.types):
            value = meta.get(self.roles.get(i, ""))
            inputs.append(value if value is not None else _random(t, sizes, gen).to(self.device))
        return inputs

    def _paged(self, tokens: list[int]) -> dict[str, torch.Tensor]:
        if self.manager is None:  # not a paged graph: every input is random
            return {}
        batch = self.manager.prepare(self.seqs, tokens)
        return {
            "row_offsets": batch.row_offsets,
            "cache_lengths": batch.cache_lengths,
            "lookup_table": batch.lookup_table,
            "kv_blocks": batch.kv_blocks,
        }

    def _sizes(self, meta: dict[str, torch.Tensor], tokens: list[int]) -> dict[str, int]:
        """Bind symbolic dims: from the paged metadata, the leading dim of float inputs is
        the token count, then --dim, then 4."""
        sizes: dict[str, int] = {}
        for i, t in enumerate(self.types):
            if (value := meta.get(self.roles.get(i, ""))) is not None:
                sizes.update({d.name: s for d, s in zip(t.shape, value.shape) if d.is_symbolic})
        for t in self.types:
            lead = t.shape[0] if t.shape else None
            if tokens and lead is not None and lead.is_symbolic and t.dtype.is_float:
                sizes.setdefault(lead.name, sum(tokens))
        return sizes | self.dims | {n: 4 for t in self.types for n in _names(t) if n not in sizes | self.dims}

    def buffers(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The buffer inputs after the call (written in place)."""
        from fusegraph.compiler.types import BufferType

        return [x for x, t in zip(inputs, self.types) if isinstance(t, BufferType)]

    def commit(self, tokens: list[int]) -> None:
        if self.manager is not None:
            self.manager.commit(self.seqs, tokens)


def _names(t: TensorType | BufferType) -> list[str]:
    return [d.name for d in t.shape if d.is_symbolic]


def _random(t: TensorType | BufferType, sizes: dict[str, int], gen: torch.Generator) -> torch.Tensor:
    import torch

    shape = [d.value if d.is_static else sizes[d.name] for d in t.shape]
    dtype = t.dtype.to_torch()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    return torch.randint(0, 8, shape, generator=gen).to(dtype)
