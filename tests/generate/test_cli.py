"""`fusegraph generate`: the --json contract, streamed text with a tokenizer, a small cache
that forces preemption, and refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fusegraph.cli import main
from tests.generate.conftest import WORDS, Tiny


def test_cli__token_ids_json_prints_the_new_tokens_of_each_prompt(
    tiny_llama: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "generate",
        str(tiny_llama.folder),
        "--token-ids",
        "5,17,3;60,2",
        "--max-new-tokens",
        "6",
        "--json",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {
        "token_ids": [tiny_llama.reference([5, 17, 3], 6), tiny_llama.reference([60, 2], 6)]
    }
    # a cache of 3 pages of 4 tokens cannot hold both (2 pages each): one is preempted
    assert main([*argv, "--num-blocks", "3", "--page-size", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out == out and re.search(r"steps, [1-9]\d* preemptions", captured.err)


def test_cli__a_prompt_streams_text_and_reports_the_speed(
    tiny_llama: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(tiny_llama.folder), "--prompt", "w5 w17 w3", "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    want = " ".join(WORDS[t] for t in tiny_llama.reference([5, 17, 3], 5))
    assert captured.out == want + "\n"
    assert (
        "loading and compiling" in captured.err
        and "5 tokens in" in captured.err
        and "tokens/s" in captured.err
    )


def test_cli__seeded_sampling_repeats(tiny_llama: Tiny, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "generate",
        str(tiny_llama.folder),
        "--token-ids",
        "1,2,3",
        "--temperature",
        "1.2",
        "--top-p",
        "0.9",
    ]
    outs = []
    for seed in ("1", "1", "2"):
        assert main([*argv, "--seed", seed, "--json", "--max-new-tokens", "10"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["token_ids"])
    assert outs[0] == outs[1] != outs[2]


def test_cli__refuses_bad_input_in_one_line(
    tiny_llama: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(tiny_llama.folder), "--token-ids", "1,x;2", "--json"]) == 2
    assert "--token-ids: prompt 0 ('1,x') is not comma-separated ints" in capsys.readouterr().err
    (tmp_path / "config.json").write_text((tiny_llama.folder / "config.json").read_text())
    assert main(["generate", str(tmp_path), "--prompt", "w1"]) == 2
    assert "no tokenizer.json, so --prompt cannot be encoded; use --token-ids" in capsys.readouterr().err
    assert main(["generate", str(tiny_llama.folder), "--token-ids", "1", "--temperature", "-1"]) == 2
    assert "SamplingParams: temperature must be a finite number >= 0" in capsys.readouterr().err
