"""Text generation: continuous batching over a compiled decoder model (`Generator`),
sampling (`SamplingParams`), tokenizers (`load_tokenizer`) and `fusegraph generate`."""

from __future__ import annotations

from fusegraph.generate.generator import Generator, GeneratorStats, TokenEvent
from fusegraph.generate.sampling import SamplingParams

__all__ = ["Generator", "GeneratorStats", "SamplingParams", "TokenEvent"]
