"""Text generation: continuous batching over a compiled decoder model (`Generator`),
sampling (`SamplingParams`), tokenizers (`load_tokenizer`) and `fusegraph generate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if (module := _LAZY.get(name)) is None:
        raise AttributeError(f"module 'fusegraph.generate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Generator", "GeneratorStats", "SamplingParams", "TokenEvent"]
