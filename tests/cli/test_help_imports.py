"""`fusegraph <command> --help` (and `opt --list-passes`) import neither torch nor the op
families: the packages on the way (`fusegraph`, `fusegraph.runtime`, `fusegraph.nn`,
`fusegraph.generate`) import their members lazily (PEP 562), so help returns at once.

Each command runs in a fresh interpreter; the test reads its `sys.modules`, not a clock.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_HEAVY = (
    "torch",
    "triton",
    "xdsl",
    "sympy",
    "fusegraph.ops",
    "fusegraph.runtime.eager",
    "fusegraph.nn.layer",
)
_PROBE = """
import contextlib, io, json, sys
from fusegraph.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        status = main(sys.argv[1:])
    except SystemExit as exit:
        status = exit.code
print(json.dumps({"status": status, "help": out.getvalue(), "heavy": [m for m in HEAVY if m in sys.modules]}))
"""
_COMMANDS = [["--help"], ["opt", "--list-passes"]] + [
    [name, "--help"] for name in ("opt", "lower", "run", "demo", "model", "generate")
]


@pytest.mark.parametrize("argv", _COMMANDS, ids=[" ".join(a) for a in _COMMANDS])
def test_help_imports_no_torch(argv: list[str]) -> None:
    probe = f"HEAVY = {_HEAVY!r}\n{_PROBE}"
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["status"] in (0, None)
    assert result["help"].strip(), "no help printed"
    if argv[-1] == "--help" and len(argv) == 2:
        assert f"fusegraph {argv[0]}" in result["help"]  # the subcommand's own options
    assert result["heavy"] == []


def test_the_lazy_packages_still_export_their_api() -> None:
    import fusegraph
    import fusegraph.generate
    import fusegraph.nn
    import fusegraph.runtime
    from fusegraph.nn import load_model  # a from-import goes through __getattr__ too

    assert callable(fusegraph.compile) and callable(fusegraph.runtime.compile)
    assert load_model is fusegraph.nn.load_model and fusegraph.nn.GPTQLinear.__name__ == "GPTQLinear"
    assert fusegraph.Generator is fusegraph.generate.Generator
    assert fusegraph.runtime.PagedKVCacheManager.__name__ == "PagedKVCacheManager"
    for package in (fusegraph.nn, fusegraph.generate, fusegraph.runtime):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            package.nope  # noqa: B018
