"""`fusegraph model MODEL_DIR`: --print-ir, --lower, and --logits --json against transformers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from fusegraph.cli import main
from tests.models.hf_models import hf_last_logits

PROMPTS = [[1, 2, 3], [40, 5], [7, 8, 9, 10, 11, 12]]
TOKEN_IDS = ";".join(",".join(map(str, p)) for p in PROMPTS)


def test_model_cli__logits_json_equal_transformers(qwen2_gptq: tuple[Path, Any], capsys: Any) -> None:
    folder, reference = qwen2_gptq
    args = ["model", str(folder), "--logits", "--token-ids", TOKEN_IDS, "--device", "cpu", "--json"]
    assert main([*args, "--dtype", "float32"]) == 0
    got = torch.tensor(json.loads(capsys.readouterr().out)["logits"])
    torch.testing.assert_close(got, hf_last_logits(reference, PROMPTS), atol=1e-4, rtol=1e-4)
    assert main([*args, "--unfused", "--dtype", "float32"]) == 0  # the same with the unfused graph
    unfused = torch.tensor(json.loads(capsys.readouterr().out)["logits"])
    torch.testing.assert_close(unfused, got, atol=1e-5, rtol=1e-5)


def test_model_cli__print_ir_and_lower(qwen3_gptq: tuple[Path, Any], capsys: Any) -> None:
    folder, _ = qwen3_gptq
    assert main(["model", str(folder), "--print-ir"]) == 0
    ir = capsys.readouterr().out
    assert ir.count("fg.rope_split_store ") == 2 and ir.count("fg.qmatmul.gptq ") == 14
    assert '"model.embed_tokens.weight"' in ir and "lm_head" not in ir  # tied embeddings
    assert re.search(
        r"func\.return %\d+ : !fg\.tensor<\[batch_plus_1 - 1, 96\], f32, cpu>", ir
    )  # last tokens
    assert main(["model", str(folder), "--lower", "--unfused", "-p", ""]) == 0
    mlir = capsys.readouterr().out
    assert "func.func @main(%arg0: !torch.vtensor<[?],si64>" in mlir and "torch.fusegraph.rope" in mlir


def test_model_cli__errors_are_one_line_with_a_reproducer(qwen3_gptq: tuple[Path, Any], capsys: Any) -> None:
    folder, _ = qwen3_gptq
    assert main(["model", str(folder), "--logits", "--token-ids", "1,x"]) == 1
    assert "prompt 0 ('1,x') must be comma-separated integers" in capsys.readouterr().err
    assert main(["model", str(folder), "--logits", "--token-ids", "1,96", "--json"]) == 1
    assert "id 96 is out of range for vocab_size 96" in capsys.readouterr().err
    assert main(["model", str(folder / "nope"), "--print-ir"]) == 1
    assert "nope: not a directory" in capsys.readouterr().err
