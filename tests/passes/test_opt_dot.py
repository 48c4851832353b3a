"""`fusegraph opt --dot / --dot-compare`: pictures of the result, and of the input beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusegraph.cli import main
from fusegraph.compiler import dot
from tests.passes.graphs import Layer, unfused_graph

FUSE = "fuse-rope-split-store,dce"


def _src(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "in.mlir"
    path.write_text(text if text is not None else str(unfused_graph(Layer())))
    return path


def _no_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dot.shutil, "which", lambda _name: None)


def test_dot__renders_svg_with_graphviz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if dot.shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    out = tmp_path / "fused.svg"
    assert main(["opt", str(_src(tmp_path)), "-p", FUSE, "--dot", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"fusegraph opt: wrote {out}\n" in captured.err
    svg = out.read_text()
    assert "<svg" in svg and "fg.rope_split_store" in svg and "fg.kv_cache.store" not in svg
    assert "fg.rope_split_store %" in captured.out  # the IR still goes to stdout


def test_dot__writes_dot_text_without_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_graphviz(monkeypatch)
    assert main(["opt", str(_src(tmp_path)), "-p", FUSE, "--dot", str(tmp_path / "fused.svg")]) == 0
    assert not (tmp_path / "fused.svg").exists()
    text = (tmp_path / "fused.dot").read_text()
    assert text.startswith('digraph "layer"') and "fg.rope_split_store" in text and "fg.rope\\n" not in text
    assert "wrote " + str(tmp_path / "fused.dot") + " (Graphviz `dot` not found" in capsys.readouterr().err


def test_dot_compare__puts_the_input_beside_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_graphviz(monkeypatch)
    assert main(["opt", str(_src(tmp_path)), "-p", FUSE, "--dot-compare", str(tmp_path / "cmp.svg")]) == 0
    text = (tmp_path / "cmp.dot").read_text()
    before, after = text.split("subgraph cluster_1")
    assert 'label="input"' in before and f'label="after -p {FUSE}"' in after
    assert "fg.kv_cache.store" in before and "fg.rope_split_store" not in before
    assert "fg.rope_split_store" in after and "fg.kv_cache.store" not in after


def test_dot_compare__renders_svg_with_graphviz(tmp_path: Path) -> None:
    if dot.shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    out = tmp_path / "cmp.svg"
    args = [
        "opt",
        str(_src(tmp_path)),
        "-p",
        FUSE,
        "--dot",
        str(tmp_path / "a.svg"),
        "--dot-compare",
        str(out),
    ]
    assert main(args) == 0
    svg = out.read_text()
    assert "<svg" in svg and "fg.rope_split_store" in svg and "fg.kv_cache.store" in svg
    assert (tmp_path / "a.svg").exists()


def test_dot__numbers_the_pictures_of_split_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_graphviz(monkeypatch)
    text = str(unfused_graph(Layer(), "a")) + "// -----\n" + str(unfused_graph(Layer(), "b"))
    src = _src(tmp_path, text)
    assert main(["opt", str(src), "-p", FUSE, "--split-input-file", "--dot", str(tmp_path / "g.svg")]) == 0
    assert (tmp_path / "g.0.dot").read_text().startswith('digraph "a"')
    assert (tmp_path / "g.1.dot").read_text().startswith('digraph "b"')


def test_dot__no_picture_for_a_failing_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_graphviz(monkeypatch)
    src = _src(tmp_path, str(unfused_graph(Layer())).replace("fg.rope %", "fg.ropex %", 1))
    assert main(["opt", str(src), "-p", FUSE, "--dot", str(tmp_path / "g.svg")]) == 1
    assert not list(tmp_path.glob("g.*"))
