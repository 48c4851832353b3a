"""The `fusegraph` CLIs on bad input: one-line errors and exit codes, never a traceback;
reproducers only when asked; `--help` and `--list-passes` without torch."""

from __future__ import annotations

import glob
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fusegraph.cli import main
from tests.compiler.op_examples import EXAMPLES
from tests.lowering._graphs import gptq_attention_graph
from tests.passes.graphs import Layer, unfused_graph


def _src(tmp_path: Path, text: str | bytes, name: str = "in.mlir") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _blocked(tmp_path: Path, name: str) -> str:
    """A path nobody can create (its parent is a file), even as root."""
    (tmp_path / "a_file").write_text("")
    return str(tmp_path / "a_file" / name)


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def test_help_and_list_passes__import_neither_torch_nor_xdsl() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from fusegraph.cli import main\n"
        "for argv in (['--help'], ['opt', '--help'], ['lower', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['opt', '--list-passes']) == 0\n"
        "assert 'canonicalize' in out.getvalue()\n"
        "heavy = sorted(m for m in ('torch', 'xdsl', 'sympy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_list_passes__read_from_the_sources_equals_the_imported_classes() -> None:
    from fusegraph.passes.opt_cli import list_passes, list_passes_statically

    assert list_passes_statically() == list_passes()


@pytest.mark.parametrize("command", [["run", "g.mlir"], ["demo"]])
def test_device_cuda_without_cuda__one_line_error(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert f"fusegraph {command[0]}: error: --device cuda: CUDA is not available on this machine" in err


@pytest.mark.parametrize("flag", ["-o", "--dot"])
def test_opt__unwritable_output_is_a_one_line_error(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _src(tmp_path, str(unfused_graph(Layer())))
    assert main(["opt", str(src), flag, _blocked(tmp_path, "out.svg")]) == 2
    err = capsys.readouterr().err
    assert "fusegraph opt: error: [Errno 20] Not a directory" in err
    _no_traceback(err)


def test_lower__unwritable_output_or_dump_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch_mlir")
    src = _src(tmp_path, str(EXAMPLES["fg.add"]()))
    assert main(["lower", str(src), "--dump-dir", _blocked(tmp_path, "dump")]) == 2
    assert main(["lower", str(src), "-o", _blocked(tmp_path, "out.mlir")]) == 2
    err = capsys.readouterr().err
    assert err.count("fusegraph lower: error:") == 2 and "cannot write -o" in err
    _no_traceback(err)


def test_opt__writes_a_reproducer_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _src(tmp_path, str(unfused_graph(Layer())).replace("fg.rope %", "fg.ropex %", 1))
    pattern = str(Path(tempfile.gettempdir()) / "fusegraph-repro-*.mlir")
    before = set(glob.glob(pattern))
    assert main(["opt", str(src), "-p", "cse"]) == 1
    assert set(glob.glob(pattern)) == before
    assert f"reproduce with: fusegraph opt {src} -p cse" in capsys.readouterr().err
    repro_dir = tmp_path / "repro"
    assert main(["opt", str(src), "-p", "cse", "--reproducer", str(repro_dir)]) == 1
    saved = repro_dir / "fusegraph-repro-0.mlir"
    assert f"reproduce with: fusegraph opt {saved} -p cse" in capsys.readouterr().err
    assert main(["opt", str(saved), "-p", "cse"]) == 1  # it reproduces
    assert "fg.ropex is not registered" in capsys.readouterr().err


def test_opt__two_functions_or_none_fail_as_parse_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = str(unfused_graph(Layer(), "a")).rstrip().removesuffix("}") + "\n".join(
        str(unfused_graph(Layer(), "b")).splitlines()[1:]
    )
    assert main(["opt", str(_src(tmp_path, two, "two.mlir"))]) == 1
    assert "exactly one func.func, found 2 (@a, @b)" in capsys.readouterr().err
    assert main(["opt", str(_src(tmp_path, "builtin.module {\n}\n", "none.mlir"))]) == 1
    assert f"{tmp_path / 'none.mlir'}:1:1: a graph module must hold exactly one func.func, found none" in (
        capsys.readouterr().err
    )


def test_opt__non_utf8_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = str(unfused_graph(Layer()))
    src = _src(tmp_path, text.encode() + b"// \xff\n")
    assert main(["opt", str(src)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:{text.count(chr(10)) + 1}:4: the file is not UTF-8 text (byte 0xff)" in err
    _no_traceback(err)


def test_lower__tosa_refuses_attention_graphs_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _src(tmp_path, str(gptq_attention_graph(num_layers=1, fused=False)))
    assert main(["lower", str(src), "--mode", "decomposed", "--output-type", "tosa"]) == 1
    err = capsys.readouterr().err
    assert "--output-type tosa lowers MLP-style graphs only" in err
    assert (
        "fg.attention.paged, fg.kv_cache.store, fg.qmatmul.gptq, fg.rope, fg.split (on dynamic dims)" in err
    )
    assert "use --output-type linalg-on-tensors or stablehlo" in err


def test_demo__unwritable_dump_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dump-dir", _blocked(tmp_path, "dump")]) == 2
    err = capsys.readouterr().err
    assert "fusegraph demo: error: [Errno 20] Not a directory" in err
    _no_traceback(err)
