"""`fusegraph model --tp 2 --logits --json` and `fusegraph generate --tp 2 --json` print the
JSON of TP=1 (two gloo ranks; rank 0 prints)."""

from __future__ import annotations

import json

import pytest
import torch

from fusegraph.cli import main
from tests.distributed import _tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_tiny.write_model(tmp_path_factory.mktemp("cli") / "m"))


def _json(capfd: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capfd.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # one JSON line: rank 1 prints nothing
    return json.loads(out[0])


def test_model_cli__tp2_logits_equal_tp1(model_dir: str, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["model", model_dir, "--logits", "--token-ids", "1,2,3;4,5,6,7,8", "--json"]
    one = _json(capfd, argv)["logits"]
    two = _json(capfd, [*argv, "--tp", "2"])["logits"]
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=0, atol=1e-5)


def test_generate_cli__tp2_tokens_equal_tp1(model_dir: str, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", model_dir, "--token-ids", "1,2,3;4,5", "--max-new-tokens", "4", "--json"]
    assert _json(capfd, [*argv, "--tp", "2"]) == _json(capfd, argv)


def test_model_cli__tp_not_dividing_the_heads__one_line_error(
    model_dir: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", model_dir, "--logits", "--token-ids", "1", "--tp", "3"]) == 1
    err = capfd.readouterr().err
    assert "num_attention_heads (4) must be divisible by the world size (3)" in err
