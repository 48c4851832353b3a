"""Tiny model directories shared by the tests in this folder (made once per session)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fusegraph.nn import QuantizationConfig
from tests.models.hf_models import make_model_dir
from tests.models.runner import one_torch_thread

pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def llama_gptq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Llama 3 (llama3 rope scaling in transformers 5's rope_parameters), GPTQ 4-bit act-order,
    asymmetric; q/k/v and gate/up share their act-order permutation (so they stack)."""
    folder = tmp_path_factory.mktemp("llama_gptq")
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}  # fmt: skip
    quant = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    return folder, make_model_dir("llama", folder, quant=quant, rope_parameters=rope)


@pytest.fixture(scope="session")
def qwen2_gptq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Qwen2 (q/k/v biases), GPTQ 4-bit sym without act order, gptq_v2 zeros; config.json in
    the older form: top-level rope_theta + rope_scaling (linear)."""
    folder = tmp_path_factory.mktemp("qwen2_gptq")
    rope = {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0}
    quant = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=True, checkpoint_format="gptq_v2")
    model = make_model_dir("qwen2", folder, quant=quant, rope_parameters=rope)
    config = json.loads((folder / "config.json").read_text())
    del config["rope_parameters"]
    config.update(rope_theta=1000000.0, rope_scaling={"type": "linear", "factor": 2.0})
    (folder / "config.json").write_text(json.dumps(config))
    return folder, model


@pytest.fixture(scope="session")
def qwen3_gptq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Qwen3 (q/k norm, head_dim 16), tied embeddings, GPTQ 3-bit act-order with a different
    permutation per projection (so nothing stacks)."""
    folder = tmp_path_factory.mktemp("qwen3_gptq")
    quant = QuantizationConfig(bits=3, group_size=32, desc_act=True, sym=True)
    return folder, make_model_dir("qwen3", folder, quant=quant, shared_perm=False, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def mistral_dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Mistral, dense float32, a sliding window of 6 tokens (shorter than the prompts)."""
    folder = tmp_path_factory.mktemp("mistral_dense")
    return folder, make_model_dir("mistral", folder, quant=None, sliding_window=6)
