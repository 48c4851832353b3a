"""Runs every `*.mlir` FileCheck test under tests/filecheck (recursively).

Each file's `// RUN:` lines are shell pipelines; `%s` is the file's path. A RUN line
ending in `\\` continues on the next RUN line. The test fails with the pipeline's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FILES = sorted(HERE.rglob("*.mlir"))


def run_lines(path: Path) -> list[str]:
    """The RUN commands of `path`, with continuations joined and `%s` substituted."""
    commands, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped.startswith("// RUN:"):
            continue
        part = stripped[len("// RUN:") :].strip()
        if part.endswith("\\"):
            current += part[:-1] + " "
            continue
        commands.append((current + part).replace("%s", str(path)))
        current = ""
    return commands


def _env() -> dict[str, str]:
    # the venv's bin first, so `fusegraph` and `filecheck` are the ones installed with us
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(HERE)) for p in FILES])
def test_filecheck(path: Path) -> None:
    commands = run_lines(path)
    assert commands, f"{path}: no '// RUN:' line"
    for command in commands:
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=HERE,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"RUN: {command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}", pytrace=False
            )


def test_tools_are_installed() -> None:
    env_path = _env()["PATH"]
    assert shutil.which("fusegraph", path=env_path), "the `fusegraph` console script is not installed"
    assert shutil.which("filecheck", path=env_path), "`filecheck` is not installed"
