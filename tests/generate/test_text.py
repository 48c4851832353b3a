"""Text helpers: tokenizer.json loading, eos stop tokens, and incremental detokenizing that
never emits half a UTF-8 character."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusegraph.generate.text import TextStream, load_tokenizer, stop_token_ids


def _byte_tokenizer(folder: Path) -> None:
    """One token per byte (GPT-2's byte-to-unicode alphabet), so a character may span tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(folder / "tokenizer.json"))


def test_text__stream_waits_for_whole_characters(tmp_path: Path) -> None:
    _byte_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("aé€!").ids
    assert len(ids) == 1 + 2 + 3 + 1  # bytes
    stream = TextStream(tok)
    pieces = [stream.push(t) for t in ids]
    assert pieces == ["a", "", "é", "", "", "€", "!"]
    assert "".join(pieces) == stream.text == "aé€!"


def test_text__stop_tokens_come_from_generation_config_then_config(tmp_path: Path) -> None:
    assert stop_token_ids(tmp_path) == () and load_tokenizer(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert stop_token_ids(tmp_path) == (2,)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    assert stop_token_ids(tmp_path) == (7, 9)
    (tmp_path / "generation_config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"generation_config.json: not a JSON object"):
        stop_token_ids(tmp_path)


def test_text__a_broken_tokenizer_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"tokenizer.json: not a tokenizer the `tokenizers` package reads"):
        load_tokenizer(tmp_path)
