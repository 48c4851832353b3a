"""Text generation: continuous batching over a compiled decoder model (`Generator`),
sampling (`SamplingParams`), tokenizers (`load_tokenizer`) and `fusegraph generate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusegraph.compiler.lazy import lazy_exports

if TYPE_CHECKING:
    from fusegraph.generate.generator import Generator, GeneratorStats, TokenEvent
    from fusegraph.generate.sampling import SamplingParams

# Lazy (PEP 562): `fusegraph generate --help` imports this package without torch.
_LAZY = {
    "Generator": "fusegraph.generate.generator",
    "GeneratorStats": "fusegraph.generate.generator",
    "TokenEvent": "fusegraph.generate.generator",
    "SamplingParams": "fusegraph.generate.sampling",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["Generator", "GeneratorStats", "SamplingParams", "TokenEvent"]
