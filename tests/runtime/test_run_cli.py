"""`fusegraph run`: valid paged metadata from the cache manager, random weights with a valid
g_idx, and --check against eager CPU on both backends."""

from __future__ import annotations

import pytest
import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.cli import main as cli_main
from fusegraph.runtime.run_cli import input_roles, random_weights
from tests.lowering._graphs import gptq_attention_graph

CPU = DeviceRef.CPU()


def test_input_roles_follow_the_operands_the_inputs_feed() -> None:
    roles = input_roles(gptq_attention_graph(1, fused=False))
    assert roles == {1: "row_offsets", 2: "kv_blocks", 3: "cache_lengths", 4: "lookup_table"}


def test_random_weights_give_a_valid_g_idx_and_positive_scales() -> None:
    with Graph("g", input_types=[TensorType(DType.float32, ["m", 64], CPU)]) as g:
        (x,) = g.inputs
        qweight = g.add_weight("p.qweight", TensorType(DType.int32, [8, 16], CPU))
        scales = g.add_weight("p.scales", TensorType(DType.float16, [2, 16], CPU))
        g_idx = g.add_weight("p.g_idx", TensorType(DType.int32, [64], CPU))
        g.output(
            ops.qmatmul_gptq(x, qweight, scales, None, g_idx, bits=4, group_size=32, sym=True, desc_act=True)
        )
    weights = random_weights(g, seed=0)
    assert weights["p.g_idx"].tolist() == [k // 32 for k in range(64)]
    assert (weights["p.scales"] > 0).all() and weights["p.qweight"].dtype == torch.int32


@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_run_check_on_a_paged_graph_prints_steps_and_max_error(
    tmp_path, capsys, monkeypatch, backend
) -> None:
    if backend == "iree":
        pytest.importorskip("iree.compiler")
    monkeypatch.setenv("FUSEGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "attn.mlir"
    path.write_text(str(gptq_attention_graph(1, fused=True)))
    assert cli_main(["run", str(path), "--backend", backend, "--check", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 0: [9, 64] torch.float32" in out and "(tokens [5, 3, 1])" in out
    assert "step 1: [3, 64] torch.float32" in out
    assert "max error: " in out and out.rstrip().endswith("OK")


def test_run_reports_a_bad_dim_binding(tmp_path, capsys) -> None:
    path = tmp_path / "attn.mlir"
    path.write_text(str(gptq_attention_graph(1, fused=True)))
    assert cli_main(["run", str(path), "--dim", "batch"]) == 1
    assert "--dim expects NAME=SIZE, got 'batch'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "printed"),
    [
        ([], "pipeline: fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce"),
        (["--pipeline", "none"], "pipeline: none (the graph as written)"),
        (["--pipeline", "fuse-rope-split-store"], "pipeline: fuse-rope-split-store"),
    ],
)
def test_run_prints_the_pipeline_and_checks_it_against_the_graph_as_written(
    tmp_path, capsys, flag, printed
) -> None:
    path = tmp_path / "attn.mlir"
    path.write_text(str(gptq_attention_graph(1, fused=False)))
    assert cli_main(["run", str(path), "--check", "--steps", "1", *flag]) == 0
    out = capsys.readouterr().out
    assert printed + "\n" in out and out.rstrip().endswith("OK")


def test_run_profile_prints_host_overhead_and_time_per_op(tmp_path, capsys) -> None:
    path = tmp_path / "attn.mlir"
    path.write_text(str(gptq_attention_graph(1, fused=False)))
    assert cli_main(["run", str(path), "--steps", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    profile = out[out.index("profile of 'gptq_attn_1l_unfused' on cpu (pipeline fuse-qkv") :]
    assert ", 20 steps\n  host " in profile and " us/call, wall " in profile and " CPU ops" in profile
    rows = [line.split() for line in profile.splitlines()[3:] if "more)" not in line]
    assert rows and all(float(r[0]) > 0 and r[2].startswith("aten::") for r in rows)
    assert cli_main(["run", str(path), "--backend", "iree", "--profile"]) == 1
    assert "--profile needs --backend eager, got --backend iree" in capsys.readouterr().err
