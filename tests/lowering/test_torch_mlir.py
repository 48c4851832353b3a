"""`to_torch_mlir` on 2-layer GPTQ attention graphs, fused and unfused: custom ops stay
`torch.operator`s and parse back, decomposed modules are pure aten and lower to linalg,
symbolic dims stay dynamic, failures carry a reproducer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.cli import main as cli_main
from fusegraph.compiler.lowering import to_fx, to_torch_mlir
from fusegraph.compiler.lowering.torch_mlir import (
    OutputTypeName,
    TorchMlirLoweringError,
    TorchMlirModule,
    lower_module,
)
from tests.lowering._graphs import gptq_attention_graph, gptq_attention_weights

torch_mlir = pytest.importorskip("torch_mlir")

LOWERED: dict[tuple[bool, str], TorchMlirModule] = {}
Mode = Literal["custom", "decomposed"]
Lowered = Callable[[bool, Mode], TorchMlirModule]


@pytest.fixture(scope="module")
def lowered() -> Lowered:
    """Lower each (fused, mode) 2-layer graph once per session, on first use."""

    def get(fused: bool, mode: Mode) -> TorchMlirModule:
        if (fused, mode) not in LOWERED:
            LOWERED[fused, mode] = to_torch_mlir(gptq_attention_graph(2, fused), mode=mode)
        return LOWERED[fused, mode]

    return get


def _reparse(text: str) -> Any:
    """A fresh torch-mlir Module parsed from text, in a context with the torch dialect."""
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d

    context = ir.Context()
    torch_d.register_dialect(context)
    module = ir.Module.parse(text, context)
    assert module.operation.verify()
    return module


def _operators(text: str) -> Counter[str]:
    names = [
        line.split('torch.operator "')[1].split('"')[0]
        for line in text.splitlines()
        if "torch.operator" in line
    ]
    return Counter(names)


@pytest.mark.parametrize(
    ("fused", "expected"),
    [
        (True, {"qmatmul_gptq": 4, "rope_split_store": 2, "paged_attention": 2}),
        (False, {"qmatmul_gptq": 4, "rope": 4, "kv_cache_store": 4, "paged_attention": 2}),
    ],
    ids=["fused", "unfused"],
)
def test_custom_mode__one_torch_operator_per_custom_op_and_parses_back(
    lowered: Lowered, fused: bool, expected: dict[str, int]
) -> None:
    module = lowered(fused, "custom")
    text = str(module)
    assert _operators(text) == Counter({f"torch.fusegraph.{k}": v for k, v in expected.items()})
    reparsed = _reparse(text)
    assert _operators(str(reparsed)) == _operators(text)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_decomposed_mode__pure_aten_with_mm_and_lowers_to_linalg(lowered: Lowered, fused: bool) -> None:
    text = str(lowered(fused, "decomposed"))
    assert "torch.operator" not in text
    assert "torch.aten.mm" in text
    module = _reparse(text)
    lower_module(module, "linalg-on-tensors")
    linalg = str(module)
    assert "linalg.matmul" in linalg
    assert "torch.aten" not in linalg and "torch.operator" not in linalg


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
def test_symbolic_dims_stay_dynamic_in_the_signature(lowered: Lowered, mode: Mode) -> None:
    x, row_offsets, kv_blocks, lengths, lookup = lowered(True, mode).argument_types()[:5]
    assert x == "!torch.vtensor<[?,64],f32>"  # total_seq_len
    assert row_offsets == lengths == "!torch.vtensor<[?],ui32>"
    assert lookup == "!torch.vtensor<[?,?],ui32>"
    assert kv_blocks == "!torch.vtensor<[24,2,2,4,2,16],f32>"


def test_traced_fx_module_is_not_specialized_to_the_trace_sizes(lowered: Lowered) -> None:
    """The imported FX graph, run on real tensors, matches to_fx at sizes unlike the hints."""
    graph = gptq_attention_graph(2, True)
    weights = list(gptq_attention_weights(graph).values())
    traced = lowered(True, "decomposed").fx_module
    reference = to_fx(graph, mode="decomposed")
    for tokens in ([3, 1], [2, 6, 1]):
        offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()], dtype=torch.uint32)
        lookup = torch.arange(len(tokens) * 3).reshape(len(tokens), 3).to(torch.uint32)
        lengths = torch.tensor([1] * len(tokens), dtype=torch.uint32)
        inputs = [torch.randn(sum(tokens), 64), offsets, torch.zeros(24, 2, 2, 4, 2, 16), lengths, lookup]
        got, want = traced(*inputs, *weights), reference(*inputs, *weights)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_pipeline_failure_raises_with_reproducer_and_saved_input(lowered: Lowered, tmp_path: Path) -> None:
    module = _reparse(str(lowered(True, "custom")))
    with pytest.raises(TorchMlirLoweringError, match="torch.operator") as info:
        lower_module(module, "linalg-on-tensors", dump_dir=tmp_path, name="attn")
    err = info.value
    assert err.command.startswith("torch-mlir-opt -pass-pipeline='builtin.module(")
    assert err.input_path == str(tmp_path / "attn.repro.mlir")
    assert "torch.fusegraph.rope_split_store" in (tmp_path / "attn.repro.mlir").read_text()
    assert err.command in str(err) and err.input_path in str(err)


def _mlp() -> Graph:
    cpu = DeviceRef.CPU()
    with Graph("mlp", input_types=[TensorType(DType.float32, ["batch", 8], cpu)]) as g:
        (x,) = g.inputs
        w = g.add_weight("w", TensorType(DType.float32, [8, 8], cpu))
        g.output(ops.relu(x @ w))
    return g


@pytest.mark.parametrize("output_type", ["tosa", "stablehlo"])
def test_other_backends_and_dump_dir(tmp_path: Path, output_type: OutputTypeName) -> None:
    module = to_torch_mlir(_mlp(), mode="decomposed", output_type=output_type, dump_dir=tmp_path)
    assert module.argument_types() == ["tensor<?x8xf32>", "tensor<8x8xf32>"]
    assert f"{output_type}." in str(module)
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["mlp.fx.py", f"mlp.{output_type}.mlir", "mlp.torch.mlir"])
    assert "torch.aten.mm" in (tmp_path / "mlp.torch.mlir").read_text()


def test_rejects_unknown_mode_and_output_type() -> None:
    with pytest.raises(ValueError, match="mode must be one of custom, decomposed, got 'fused'"):
        to_torch_mlir(_mlp(), mode="fused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_type must be one of torch, linalg-on-tensors"):
        to_torch_mlir(_mlp(), output_type="llvm")  # type: ignore[arg-type]


def test_cli_lower_writes_output_and_reports_errors_with_reproducer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "mlp.mlir", tmp_path / "out.mlir"
    src.write_text(str(_mlp()))
    assert (
        cli_main(
            ["lower", str(src), "--mode", "decomposed", "--output-type", "linalg-on-tensors", "-o", str(out)]
        )
        == 0
    )
    assert "linalg.matmul" in out.read_text()
    src.write_text(str(_mlp()).replace("fg.relu", "fg.reluu"))
    assert cli_main(["lower", str(src)]) == 1
    err = capsys.readouterr().err
    assert "fg.reluu is not registered" in err
    assert f"reproduce with: fusegraph lower {src} --mode custom --output-type torch" in err


def test_importing_fusegraph_never_loads_torch_mlir_or_iree() -> None:
    code = (
        "import sys, fusegraph, fusegraph.compiler.lowering, fusegraph.runtime, fusegraph.ops; "
        "bad = [m for m in sys.modules if m.startswith(('torch_mlir', 'iree'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
