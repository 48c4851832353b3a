"""PassManager: pipelines, options, statistics, debug reasons, verification."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from fusegraph.compiler import TensorType
from fusegraph.compiler.types import tensor_type
from fusegraph.dialect import parse
from fusegraph.ops.shape import ReshapeOp
from fusegraph.passes import PassFailedError, PassManager, PassVerifyError, parse_pass_pipeline
from tests.passes.graphs import Layer, unfused_graph


def test_pipeline_text__builds_the_passes_in_order() -> None:
    passes = parse_pass_pipeline("fuse-rope-split-store,canonicalize,cse,dce")
    assert [p.name for p in passes] == ["fuse-rope-split-store", "canonicalize", "cse", "dce"]


def test_pipeline_text__unknown_pass_is_named_and_known_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"unknown pass 'fuse-ropes'.*known passes: canonicalize, cse, dce"):
        PassManager("cse,fuse-ropes")


def test_pipeline_text__bad_syntax_and_unknown_option_are_value_errors() -> None:
    with pytest.raises(ValueError, match="pipeline"):
        PassManager("cse{")
    with pytest.raises(ValueError, match="pass 'cse'"):
        PassManager("cse{bogus=1}")


def test_statistics__fused_and_skipped_counts_per_pass() -> None:
    g = unfused_graph(Layer(num_layers=4))
    stats = PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(g)
    text = str(stats)
    assert "fuse-rope-split-store: 4 fused, 0 skipped" in text
    assert "cse: 0 eliminated" in text and " ms  dce: " in text
    assert stats["fuse-rope-split-store"].counters == {"fused": 4, "skipped": 0}
    assert stats.total_seconds > 0


def test_statistics__skipped_counts_each_refused_chain_once() -> None:
    g = unfused_graph(Layer(breaks=frozenset(["rope_user"]), num_layers=2))
    stats = PassManager("fuse-rope-split-store").run(g)
    assert stats["fuse-rope-split-store"].counters == {"fused": 0, "skipped": 2}


def test_debug__says_why_each_candidate_did_not_match() -> None:
    stream = io.StringIO()
    g = unfused_graph(Layer(breaks=frozenset(["split_user"])))
    stats = PassManager("fuse-rope-split-store", debug=stream).run(g)
    assert "split result 0 has 2 users" in stream.getvalue()
    assert stats.reasons == stream.getvalue().splitlines()
    assert stats.reasons[0].startswith("fuse-rope-split-store: fg.kv_cache.store #")


def test_reasons__collected_without_debug_but_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    stats = PassManager("fuse-rope-split-store").run(unfused_graph(Layer(breaks=frozenset(["layers"]))))
    assert any("stores target different layers (0 vs 1)" in r for r in stats.reasons)
    assert capsys.readouterr().err == ""


@dataclass(frozen=True)
class BreakReshape(ModulePass):
    """Retypes a reshape so that the IR no longer verifies."""

    name = "break-reshape"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        reshape = next(o for o in op.walk() if isinstance(o, ReshapeOp))
        bad_type = TensorType(tensor_type(reshape.input).dtype, [3], tensor_type(reshape.input).device)
        bad = ReshapeOp.build(operands=[reshape.input], result_types=[bad_type])
        Rewriter.insert_op(bad, InsertPoint.before(reshape))


@dataclass(frozen=True)
class Explode(ModulePass):
    name = "explode"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        raise RuntimeError("boom")


def test_verify_each__failure_names_the_pass() -> None:
    g = unfused_graph(Layer())
    with pytest.raises(PassVerifyError, match="after pass 'break-reshape'"):
        PassManager([BreakReshape()]).run(g)


def test_verify_each_off__lets_the_broken_ir_through() -> None:
    PassManager([BreakReshape()], verify_each=False).run(unfused_graph(Layer()))


def test_a_raising_pass__is_named() -> None:
    with pytest.raises(PassFailedError, match="pass 'explode' failed: RuntimeError: boom"):
        PassManager([Explode()]).run(unfused_graph(Layer()))


def test_print_ir_after_change__dumps_only_passes_that_changed() -> None:
    out = io.StringIO()
    PassManager("cse,fuse-rope-split-store", print_ir_after_change=True, ir_dump=out).run(
        unfused_graph(Layer())
    )
    assert "IR Dump After fuse-rope-split-store" in out.getvalue()
    assert "IR Dump After cse" not in out.getvalue()


def test_print_ir_before_and_after_all__to_a_stream() -> None:
    out = io.StringIO()
    PassManager("cse,dce", print_ir_before_all=True, print_ir_after_all=True, ir_dump=out).run(
        unfused_graph(Layer())
    )
    titles = [line for line in out.getvalue().splitlines() if line.startswith("// -----// IR Dump")]
    assert [t.split("Dump ")[1].split(" //")[0] for t in titles] == [
        "Before cse",
        "After cse",
        "Before dce",
        "After dce",
    ]


def test_ir_dump_folder__gets_numbered_files_that_parse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    PassManager("fuse-rope-split-store,dce", ir_dump=tmp_path).run(unfused_graph(Layer()))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00_After_fuse-rope-split-store.mlir", "01_After_dce.mlir"]
    assert "fg.rope_split_store" in str(parse((tmp_path / files[1]).read_text()))


def test_run__rewrites_the_graph_in_place_and_keeps_it_round_tripping() -> None:
    g = unfused_graph(Layer(num_layers=2))
    PassManager("fuse-rope-split-store").run(g)
    assert str(parse(str(g))) == str(g)
    assert str(g).count("fg.rope_split_store") == 2
