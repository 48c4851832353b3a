"""Pass plugins: `register_pass` and `fusegraph opt --load-pass-plugin FILE.py`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from xdsl.passes import ModulePass

from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.cli import main
from fusegraph.dialect import parse
from fusegraph.passes import (
    PassManager,
    PassPluginError,
    available_passes,
    load_pass_plugin,
    register_pass,
    registry,
    unregister_pass,
)

PLUGIN = '''
"""fold-mul-one: fg.mul(x, 1.0) -> x"""
from dataclasses import dataclass

from xdsl.passes import ModulePass

from fusegraph.ops.elementwise import ConstantOp, MulOp
from fusegraph.passes import register_pass
from fusegraph.passes.patterns import (
    GuardedPattern, NoMatch, apply_patterns, current_report, defined_by, no_match,
)


class FoldMulOnePattern(GuardedPattern):
    anchor = MulOp
    counter = "folded"

    def match(self, op):
        if isinstance(one := defined_by(op.rhs, ConstantOp, "rhs"), NoMatch):
            return one
        if (value := one.value.value.data) != 1.0:
            return no_match(f"rhs constant is {value}, not 1.0")
        return op

    def rewrite(self, op, rewriter):
        rewriter.replace(op, [], [op.lhs])


@register_pass
@dataclass(frozen=True)
class FoldMulOne(ModulePass):
    name = "PASS_NAME"

    def apply(self, ctx, op):
        report = current_report(self.name)
        report.declare("folded", "skipped")
        apply_patterns(op, [FoldMulOnePattern(report)])
'''

CPU = DeviceRef.CPU()


@pytest.fixture(autouse=True)
def _forget_plugins() -> Iterator[None]:
    """Each test starts and ends with only the built-in passes."""
    before = set(registry._PLUGINS)
    yield
    for name in set(registry._PLUGINS) - before:
        unregister_pass(name)


def _plugin(tmp_path: Path, name: str = "fold-mul-one", file: str = "fold_mul_one.py") -> Path:
    path = tmp_path / file
    path.write_text(PLUGIN.replace("PASS_NAME", name))
    return path


def _mul_graph() -> Graph:
    with Graph("muls", input_types=[TensorType(DType.float32, ["n", 4], CPU)]) as g:
        (x,) = g.inputs
        g.output(x * 1.0, x * 2.0)
    return g


@dataclass(frozen=True)
class Noop(ModulePass):
    """does nothing"""

    name = "test-noop"

    def apply(self, ctx, op) -> None:  # type: ignore[no-untyped-def]
        pass


# --- register_pass ---------------------------------------------------------------------
def test_register_pass__makes_the_name_usable_in_pipeline_text() -> None:
    assert register_pass(Noop) is Noop
    assert "test-noop" in available_passes()
    stats = PassManager("test-noop,dce").run(_mul_graph())
    assert [r.name for r in stats.records] == ["test-noop", "dce"]


def test_register_pass__same_class_twice_is_a_no_op_and_unregister_forgets_it() -> None:
    register_pass(Noop)
    register_pass(Noop)
    unregister_pass("test-noop")
    assert "test-noop" not in available_passes()
    with pytest.raises(ValueError, match="unknown pass 'test-noop'"):
        PassManager("test-noop")


def test_register_pass__refuses_a_taken_name() -> None:
    clash = cast(type[Noop], dataclass(frozen=True)(type("MyDCE", (Noop,), {"name": "dce"})))
    with pytest.raises(ValueError, match=r"pass name 'dce' is already registered by built-in pass "
                       r"fusegraph.passes.dce.DeadCodeElimination; pick another name"):  # fmt: skip
        register_pass(clash)
    register_pass(Noop)
    twin = cast(type[Noop], dataclass(frozen=True)(type("Twin", (Noop,), {"name": "test-noop"})))
    with pytest.raises(ValueError, match=r"'test-noop' is already registered by plugin pass .*\.Noop"):
        register_pass(twin)


def test_register_pass__refuses_what_is_not_a_module_pass() -> None:
    with pytest.raises(TypeError, match=r"register_pass: expected a ModulePass subclass, got <class 'int'>"):
        register_pass(int)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="expected a ModulePass subclass"):
        register_pass(Noop())  # type: ignore[type-var]
    for bad in ("Fold_Mul", "fold mul", ""):
        cls = cast(type[Noop], dataclass(frozen=True)(type("Bad", (Noop,), {"name": bad})))
        with pytest.raises(ValueError, match=r"Bad.name must be a kebab-case string"):
            register_pass(cls)


def test_unregister_pass__refuses_built_in_passes() -> None:
    with pytest.raises(ValueError, match="'dce' was not added with register_pass"):
        unregister_pass("dce")


# --- load_pass_plugin ------------------------------------------------------------------
def test_load_pass_plugin__registers_and_imports_once(tmp_path: Path) -> None:
    path = _plugin(tmp_path)
    module = load_pass_plugin(path)
    assert load_pass_plugin(str(path)) is module
    g = _mul_graph()
    stats = PassManager("fold-mul-one,dce").run(g)
    assert stats["fold-mul-one"].counters == {"folded": 1, "skipped": 1}
    # #2: the folded mul before it is gone
    assert stats["fold-mul-one"].reasons == ["fold-mul-one: fg.mul #2: rhs constant is 2.0, not 1.0"]
    assert str(g).count("fg.mul") == 1


def test_load_pass_plugin__errors_name_the_file_and_the_cause(tmp_path: Path) -> None:
    with pytest.raises(PassPluginError, match=r"pass plugin '.*nope.py' is not a Python file"):
        load_pass_plugin(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PassPluginError, match=r"broken.py' failed: RuntimeError: boom"):
        load_pass_plugin(broken)
    clash = _plugin(tmp_path, name="dce", file="clash.py")
    with pytest.raises(PassPluginError, match=r"clash.py' failed: ValueError: .*'dce' is already registered"):
        load_pass_plugin(clash)


# --- fusegraph opt --load-pass-plugin ----------------------------------------------------
def test_opt__loads_a_plugin_and_runs_its_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(str(_mul_graph()))
    args = ["opt", str(src), "--load-pass-plugin", str(_plugin(tmp_path)), "-p", "fold-mul-one,dce"]
    assert main([*args, "--pass-statistics"]) == 0
    out = capsys.readouterr()
    assert "fold-mul-one: 1 folded, 1 skipped" in out.err
    result = parse(out.out)
    assert [op.name for op in result.block.ops] == ["fg.constant", "fg.mul", "func.return"]


def test_opt__plugin_flag_is_repeatable_and_lists_plugin_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _plugin(tmp_path, "fold-mul-one", "one.py")
    two = _plugin(tmp_path, "fold-mul-one-again", "two.py")
    assert main(["opt", "--load-pass-plugin", str(one), "--load-pass-plugin", str(two), "--list-passes"]) == 0
    listing = capsys.readouterr().out
    assert "\n  fold-mul-one " in listing and "\n  fold-mul-one-again " in listing


def test_opt__bad_plugin_exits_2_with_the_cause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    assert main(["opt", "-", "--load-pass-plugin", str(broken), "-p", "dce"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fusegraph opt: error: pass plugin ")
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in err


def test_opt__without_the_plugin_the_pass_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(str(_mul_graph()))
    assert main(["opt", str(src), "-p", "fold-mul-one"]) == 2
    assert "unknown pass 'fold-mul-one'" in capsys.readouterr().err


def test_opt__reproducer_keeps_the_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad.mlir"
    src.write_text(str(_mul_graph()).replace("fg.mul %", "fg.mulx %", 1))
    plugin = _plugin(tmp_path)
    assert main(["opt", str(src), "--load-pass-plugin", str(plugin), "-p", "fold-mul-one"]) == 1
    repro = next(t for t in capsys.readouterr().err.splitlines() if t.startswith("reproduce with: "))
    assert f"--load-pass-plugin {plugin.resolve()}" in repro


def test_opt__console_script_loads_a_plugin(tmp_path: Path) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(str(_mul_graph()))
    proc = subprocess.run(
        [sys.executable, "-m", "fusegraph.cli", "opt", str(src), "--load-pass-plugin",
         str(_plugin(tmp_path)), "-p", "fold-mul-one", "--debug"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "fold-mul-one: fg.mul #2: rhs constant is 2.0, not 1.0" in proc.stderr
    assert proc.stdout.count("fg.mul ") == 1
