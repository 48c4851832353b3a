"""Register a custom op, use it in a graph, print its IR, run it eagerly and lower it.

The op is `examples.rms_gate`: `rms_norm(x) * silu(gate)` with a float `eps` parameter.
Registering it once gives it:
- a shape rule (over types, raising a ValueError that names the op and the operand);
- a torch implementation, which is its CPU kernel, its fake (meta) implementation, its
  reference and its decomposition for torch-mlir / IREE.
In the IR it prints as `fg.custom ... {symbol = "examples.rms_gate", parameters = {eps = ...}}`.

Run:
    .venv/bin/python examples/custom_op.py
"""

from __future__ import annotations

import sys

import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.lowering import to_torch_mlir
from fusegraph.dialect import parse

CPU = DeviceRef.CPU()


def rms_gate_shape(types: list[TensorType], params: dict) -> list[TensorType]:
    """x and gate have one shape and dtype; so does the result."""
    x, gate = types
    if x.shape != gate.shape or x.dtype != gate.dtype:
        raise ValueError(f"examples.rms_gate: gate type {gate} != x type {x}")
    if not isinstance(params.get("eps"), float):
        raise ValueError(f"examples.rms_gate: parameter eps must be a float, got {params.get('eps')!r}")
    return [x]


def rms_gate_torch(x: torch.Tensor, gate: torch.Tensor, *, eps: float) -> torch.Tensor:
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return normed * torch.nn.functional.silu(gate)


SPEC = ops.register_custom_op("examples.rms_gate", shape_rule=rms_gate_shape, torch_impl=rms_gate_torch)


def build() -> Graph:
    t = TensorType(DType.float32, ["tokens", 64], CPU)
    with Graph("rms_gate", input_types=[t, t]) as g:
        x, gate = g.inputs
        (y,) = ops.custom("examples.rms_gate", [x, gate], {"eps": 1e-5})
        g.output(y + x)
    return g


def main() -> int:
    g = build()
    text = str(g)
    print(text)
    assert str(parse(text)) == text, "the printed IR must parse back to the same text"

    # The shape rule runs when the op is built: a bad call fails at the user's line.
    with Graph("bad", input_types=[TensorType(DType.float32, ["tokens", 64], CPU)] * 2) as bad:
        x, _ = bad.inputs
        try:
            ops.custom("examples.rms_gate", [x, x[:, :32]], {"eps": 1e-5})
        except ValueError as err:
            print("shape rule:", str(err).splitlines()[0])

    # The torch.library op is a real torch op: opcheck tests its schema and fake impl.
    x, gate = torch.randn(5, 64), torch.randn(5, 64)
    torch.library.opcheck(SPEC.library_op, ([x, gate], '{"eps": 1e-05}'))

    model = fusegraph.compile(g, backend="eager", device="cpu")
    (y,) = model(x, gate)
    want = rms_gate_torch(x, gate, eps=1e-5) + x
    max_err = float((y - want).abs().max())
    print(f"eager: max |y - torch| = {max_err:.1e}")

    custom = str(to_torch_mlir(g, mode="custom"))
    print("custom mode:", next(ln.strip() for ln in custom.splitlines() if "torch.operator" in ln))
    decomposed = str(to_torch_mlir(g, mode="decomposed"))
    aten = sorted(
        {
            tok.split("(")[0]
            for ln in decomposed.splitlines()
            for tok in ln.split()
            if tok.startswith("torch.aten.")
        }
    )
    print("decomposed mode:", ", ".join(aten))

    ok = max_err < 1e-5 and "torch.operator" not in decomposed and "torch.aten.sigmoid" in decomposed
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
