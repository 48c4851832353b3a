"""Tiny random Llama / Qwen3 directories (transformers + save_pretrained, nothing downloaded),
each with an in-process word-level tokenizer.json, and one compiled fusegraph model each."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.models.runner import one_torch_thread

VOCAB = 96
WORDS = [f"w{i}" for i in range(VOCAB)]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def write_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over `w0 .. w95` (whitespace-split), saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(folder / "tokenizer.json"))


def make_hf_model(family: str, folder: Path, seed: int = 0) -> Any:
    """A random `LlamaForCausalLM` / `Qwen3ForCausalLM` (f32) saved in `folder`; returns it."""
    import transformers

    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=96, initializer_range=0.1,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    if family == "llama":
        model: Any = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=16, **common))
    with torch.no_grad():  # non-trivial norms, so that every weight matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return model


@dataclass
class Tiny:
    folder: Path
    hf: Any  # the transformers model: the reference
    model: Any  # fusegraph DecoderModel
    compiled: Any  # compiled for NUM_BLOCKS
    page_size: int
    num_blocks: int

    def manager(self, **kw: Any) -> Any:
        from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

        return PagedKVCacheManager(self.model.kv_params, self.num_blocks, **kw)

    def reference(self, prompt: list[int], n: int) -> list[int]:
        """transformers' greedy `generate` of `n` tokens for the prompt alone."""
        with torch.no_grad():
            out = self.hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
        tokens: list[int] = out[0, len(prompt) :].tolist()
        return tokens


def _tiny(family: str, tmp: Path, num_blocks: int = 64, page_size: int = 4) -> Tiny:
    from fusegraph.nn import load_model

    folder = tmp / family
    folder.mkdir()
    hf = make_hf_model(family, folder)
    model = load_model(folder, page_size=page_size)
    return Tiny(folder, hf, model, model.compile(num_blocks), page_size, num_blocks)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _tiny("llama", tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _tiny("qwen3", tmp_path_factory.mktemp("gen"))
