"""`fusegraph opt` on files written by `str(graph)`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fusegraph.cli import main
from fusegraph.dialect import parse
from tests.passes.graphs import Layer, unfused_graph


def _write(tmp_path: Path, text: str, name: str = "in.mlir") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_opt__fuses_a_file_and_writes_parseable_ir(tmp_path: Path) -> None:
    src = _write(tmp_path, str(unfused_graph(Layer(num_layers=2))))
    out = tmp_path / "out.mlir"
    assert main(["opt", str(src), "-p", "fuse-rope-split-store,dce", "-o", str(out)]) == 0
    assert str(parse(out.read_text())).count("fg.rope_split_store %") == 2


def test_opt__reads_stdin_and_splits_input(tmp_path: Path) -> None:
    text = str(unfused_graph(Layer(), "a")) + "// -----\n" + str(unfused_graph(Layer(), "b"))
    proc = subprocess.run(
        [sys.executable, "-m", "fusegraph.cli", "opt", "-", "-p", "fuse-rope-split-store", "--split-input-file"],
        input=text, capture_output=True, text=True, check=True,
    )  # fmt: skip
    chunks = proc.stdout.split("// -----\n")
    assert len(chunks) == 2 and "@a" in chunks[0] and "@b" in chunks[1]
    assert all("fg.rope_split_store" in c for c in chunks)


def test_opt__parse_error_gives_file_line_col_and_a_reproducer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = str(unfused_graph(Layer(), "good"))
    src = _write(tmp_path, good + "// -----\n" + good.replace("fg.rope %", "fg.ropex %", 1))
    assert main(["opt", str(src), "-p", "cse", "--split-input-file"]) == 1
    err = capsys.readouterr()
    line = next(i for i, t in enumerate(src.read_text().splitlines(), 1) if "fg.ropex" in t)
    assert f"{src}:{line}:" in err.err and "fg.ropex is not registered" in err.err
    repro = next(t for t in err.err.splitlines() if t.startswith("reproduce with: "))
    assert repro == f"reproduce with: fusegraph opt {src} -p cse --split-input-file"  # no file written
    assert "@good" in err.out  # the good chunk still printed


def test_opt__bad_pipeline_names_the_pass_and_lists_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(tmp_path, str(unfused_graph(Layer())))
    assert main(["opt", str(src), "-p", "fuse-everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown pass 'fuse-everything'" in err and "fuse-rope-split-store" in err


def test_opt__list_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", "--list-passes"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == sorted(names) and {"canonicalize", "cse", "dce", "fuse-qkv-projections"} <= set(names)
    assert {"fuse-rope-split-store", "unfuse-rope-split-store"} <= set(names)


def test_opt__debug_prints_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path, str(unfused_graph(Layer(breaks=frozenset(["interleaved"])))))
    assert main(["opt", str(src), "-p", "fuse-rope-split-store", "--debug", "--pass-statistics"]) == 0
    err = capsys.readouterr().err
    assert "ropes disagree on interleaved (False vs True)" in err
    assert "fuse-rope-split-store: 0 fused, 1 skipped" in err


def test_opt__verify_diagnostics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = str(unfused_graph(Layer())).replace("fg.rope %", "fg.ropex %", 1)
    ok = _write(tmp_path, "// expected-error {{fg.ropex is not registered}}\n" + bad, "ok.mlir")
    assert main(["opt", str(ok), "--verify-diagnostics"]) == 0
    wrong = _write(tmp_path, "// expected-error {{something else}}\n" + bad, "wrong.mlir")
    assert main(["opt", str(wrong), "--verify-diagnostics"]) == 1
    missing = _write(tmp_path, "// expected-error {{boom}}\n" + str(unfused_graph(Layer())), "missing.mlir")
    assert main(["opt", str(missing), "--verify-diagnostics"]) == 1
    assert "expected error 'boom' was not produced" in capsys.readouterr().err
