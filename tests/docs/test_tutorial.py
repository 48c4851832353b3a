"""docs/tutorial.md cannot rot: every code block in it runs here, in order.

- ```python blocks run in one namespace, in a temp folder, with stdout and stderr captured.
  A block whose first line is `# file: NAME` is written to NAME instead (the tutorial then
  loads it, as a reader would).
- ```sh blocks: each command (a line starting with `fusegraph` or `filecheck`, `\\` joins
  lines) runs with bash -o pipefail in the same folder, the venv's bin first on PATH, and
  must exit 0.
- ```text blocks are the output of the code block just above them. Each of their lines must
  appear in that output, in order (other output lines may come between). `...` inside a line
  matches anything; a line that is only `...` stands for lines left out. Times such as
  `1.23 ms` or `0.84 s` match any time.
Any other kind of block fails the test. Tracebacks point at docs/tutorial.md lines.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fusegraph.passes import registry

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
_TIME = re.compile(r"\d+(\.\d+)?\s?(ms|s)\b")
_COMMANDS = ("fusegraph ", "filecheck ")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # the markdown line of the block's first code line


def blocks(text: str) -> list[Block]:
    """The fenced blocks of `text`, in order."""
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2) for m in _FENCE.finditer(text)]


def sh_commands(code: str) -> list[str]:
    """The commands of a sh block; a line that is not a command is an error."""
    commands, current = [], ""
    for raw in code.splitlines():
        line = current + raw.strip()
        if line.endswith("\\"):
            current = line[:-1].rstrip() + " "
            continue
        current = ""
        if not line or line.startswith("#"):
            continue
        if not line.startswith(_COMMANDS):
            raise AssertionError(f"sh line is not a fusegraph/filecheck command: {line!r}")
        commands.append(line)
    return commands


def _normalize(line: str) -> str:
    return _TIME.sub("<time>", line.rstrip())


def check_output(expected: str, actual: str) -> str | None:
    """None when every expected line appears in `actual` in order; else what is missing."""
    lines = [_normalize(line) for line in actual.splitlines()]
    pos = 0
    for want in expected.splitlines():
        want = _normalize(want)
        if want.strip() in ("", "..."):
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")) + r"\Z")
        hit = next((i for i in range(pos, len(lines)) if pattern.match(lines[i])), None)
        if hit is None:
            return f"expected output line not found (in order): {want!r}"
        pos = hit + 1
    return None


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def run_python(block: Block, namespace: dict[str, object]) -> str:
    if (first := block.code.split("\n", 1)[0]).startswith("# file: "):
        Path(first.removeprefix("# file: ").strip()).write_text(block.code)
        return ""
    out = io.StringIO()
    code = compile("\n" * (block.line - 1) + block.code, str(TUTORIAL), "exec")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        exec(code, namespace)
    return out.getvalue()


def run_sh(block: Block) -> str:
    output = []
    for command in sh_commands(block.code):
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=_env()
        )
        if proc.returncode != 0:
            pytest.fail(
                f"docs/tutorial.md:{block.line}: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
                pytrace=False,
            )
        output.append(proc.stdout + proc.stderr)
    return "".join(output)


@pytest.fixture
def in_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(registry._PLUGINS)
    yield tmp_path
    for name in set(registry._PLUGINS) - before:
        registry.unregister_pass(name)


def test_tutorial__every_block_runs_and_prints_what_the_page_says(in_temp_folder: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    last_output: str | None = None
    for block in blocks(TUTORIAL.read_text()):
        where = f"docs/tutorial.md:{block.line}"
        if block.lang == "python":
            last_output = run_python(block, namespace)
        elif block.lang == "sh":
            last_output = run_sh(block)
        elif block.lang == "text":
            assert last_output is not None, f"{where}: an output block must follow a code block"
            if (problem := check_output(block.code, last_output)) is not None:
                pytest.fail(f"{where}: {problem}\n--- actual output ---\n{last_output}", pytrace=False)
            last_output = None
        else:
            pytest.fail(f"{where}: a ```{block.lang} block is not run by this test", pytrace=False)


def test_check_output__matches_in_order_with_wildcards_and_times() -> None:
    actual = "a\npass statistics (total 1.31 ms)\n  0.24 ms  dce: 0 erased\nz\n"
    assert check_output("pass statistics (total 9.99 ms)\n...\n  1.00 ms  dce: 0 ...", actual) is None
    assert check_output("z\na", actual) == "expected output line not found (in order): 'a'"
    assert check_output("dce: 1 erased", actual) is not None


def test_blocks_and_sh_commands__parse_the_page_format() -> None:
    page = "x\n```python\nprint(1)\n```\ntext\n```sh\nfusegraph opt a \\\n  -p dce\n# c\n```\n"
    found = blocks(page)
    assert [(b.lang, b.line) for b in found] == [("python", 3), ("sh", 7)]
    assert sh_commands(found[1].code) == ["fusegraph opt a -p dce"]
    with pytest.raises(AssertionError, match="not a fusegraph/filecheck command"):
        sh_commands("rm -rf /\n")
