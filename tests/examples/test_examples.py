"""Every script in examples/ runs as a user would run it and prints its key result."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# script -> lines its output must contain
KEY_LINES = {
    "llama_gptq_attention.py": [
        "graph: 35 weights, 8 fg.qmatmul.gptq, 2 fg.rope_split_store, 2 fg.attention.paged",
        "caches: 2 layers x 3 sequences of [7, 19, 3] tokens compared",
        "PASS: worst error",
    ],
    "custom_op.py": [
        'fg.custom %0, %1 {symbol = "examples.rms_gate", parameters = {eps = 1.000000e-05 : f64}}',
        "shape rule: examples.rms_gate: gate type !fg.tensor<[tokens, 32], f32, cpu> != x type",
        'custom mode: %1 = torch.operator "torch.fusegraph_custom.examples_rms_gate"',
        "decomposed mode: torch.aten.add.Scalar, torch.aten.add.Tensor, torch.aten.mean.dim",
        "PASS",
    ],
    "fusion_pass.py": [
        "fuse-addmm: 1 fused, 1 skipped",
        "fuse-addmm: fg.add #7: matmul result has 2 users",
        '%5 = fg.custom %0, %1, %2 {symbol = "examples.addmm", parameters = {}}',
        "PASS: 1 fused, 1 skipped; fused graph matches the original",
    ],
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_every_example_is_covered_and_has_a_docstring() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(KEY_LINES)
    for name in scripts:
        assert ast.get_docstring(ast.parse((EXAMPLES / name).read_text())), f"{name} has no docstring"


@pytest.mark.parametrize("script", sorted(KEY_LINES))
def test_example_runs_and_prints_its_key_lines(script: str) -> None:
    proc = _run(sys.executable, str(EXAMPLES / script))
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for line in KEY_LINES[script]:
        assert line in proc.stdout, f"{script}: {line!r} not in output\n{proc.stdout}"


def test_fusion_pass_example_is_also_an_opt_plugin(tmp_path: Path) -> None:
    src = tmp_path / "two_linears.mlir"
    build = "import runpy; print(runpy.run_path('examples/fusion_pass.py')['build']())"
    made = _run(sys.executable, "-c", build)
    assert made.returncode == 0, made.stderr
    src.write_text(made.stdout)
    proc = _run(
        "fusegraph", "opt", str(src), "--load-pass-plugin", "examples/fusion_pass.py", "-p", "fuse-addmm,dce"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('symbol = "examples.addmm"') == 1
