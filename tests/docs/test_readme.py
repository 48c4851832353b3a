"""The README's examples run as written: the one-screen API, and the whole-model block on a tiny
Qwen3 GPTQ directory made here with transformers (under the name the README uses)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _run(code: str) -> tuple[dict[str, object], str]:
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, str(README), "exec"), namespace)
    return namespace, printed.getvalue()


def test_readme__has_the_api_block_and_the_whole_model_block() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 2 and "Graph(" in blocks[0] and "load_model(" in blocks[1]


def test_readme_python_example_runs() -> None:
    namespace, printed = _run(_python_blocks()[0])
    assert "fg.rope_split_store" in printed
    y, k = namespace["y"], namespace["k"]
    assert isinstance(y, torch.Tensor) and y.shape == (3, 64) and torch.isfinite(y).all()
    assert isinstance(k, torch.Tensor) and k.shape == (6, 2, 16)


def test_readme_whole_model_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from fusegraph.nn import QuantizationConfig
    from tests.models.hf_models import hf_last_logits, make_model_dir

    quant = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=True)
    reference = make_model_dir("qwen3", tmp_path / "Qwen3-0.6B-GPTQ", quant=quant, num_hidden_layers=1)
    monkeypatch.chdir(tmp_path)
    namespace, _ = _run(_python_blocks()[1])
    logits = namespace["logits"]
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, reference.config.vocab_size)
    # The README's prefill: tokens [1, 2, 3] and [4, 5]; each row is that sequence's last token.
    want = hf_last_logits(reference, [[1, 2, 3], [4, 5]])
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
