"""The README's example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, str(README), "exec"), namespace)
    assert "fg.rope_split_store" in printed.getvalue()
    y, k = namespace["y"], namespace["k"]
    assert isinstance(y, torch.Tensor) and y.shape == (3, 64) and torch.isfinite(y).all()
    assert isinstance(k, torch.Tensor) and k.shape == (6, 2, 16)
