"""Text in and out: the model directory's `tokenizer.json` (HF `tokenizers`) and its stop tokens.

Example:
    >>> tok = load_tokenizer("tiny-llama/")          # None when there is no tokenizer.json
    >>> ids = tok.encode("Hello").ids
    >>> stream = TextStream(tok)
    >>> print(stream.push(42), end="")              # the text the new token completes
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_tokenizer(model_dir: str | Path) -> Any:
    """The `tokenizers.Tokenizer` of `model_dir/tokenizer.json`, or None if there is none."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises its own Exception type
        raise ValueError(f"{path}: not a tokenizer the `tokenizers` package reads: {err}") from err


def stop_token_ids(model_dir: str | Path) -> tuple[int, ...]:
    """`eos_token_id` (an int or a list) of `generation_config.json`, else of `config.json`."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        try:
            eos = json.loads(path.read_text()).get("eos_token_id")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{path}: not a JSON object: {err}") from err
        if eos is not None:
            return tuple(int(t) for t in (eos if isinstance(eos, list) else [eos]))
    return ()


class TextStream:
    """Turns a stream of token ids into text increments (whole characters only)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        """Add a token; returns the new text it completes ('' while a character is partial)."""
        self.ids.append(token)
        text: str = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""  # an incomplete UTF-8 sequence, or a merge that rewrote the tail: wait
        new, self.text = text[len(self.text) :], text
        return new
