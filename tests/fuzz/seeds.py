"""The graphs the fuzzer mutates: real graphs built with the ops and nn API, printed.

Every registered op's round-trip example (`tests/compiler/op_examples.py`), the pass tests'
attention layers (fused, unfused, multi-layer) and the lowering tests' GPTQ attention
graphs. Importing this module also registers the custom ops those examples use, so a
worker that imports it parses the same dialect as the process that built the seeds.
"""

from __future__ import annotations

import functools

from tests.compiler.op_examples import EXAMPLES
from tests.lowering._graphs import gptq_attention_graph
from tests.passes.graphs import Layer, attention_graph, fused_graph, unfused_graph


@functools.cache
def seed_texts() -> dict[str, str]:
    """Name -> printed IR, in a fixed order."""
    seeds = {f"example:{name}": str(build()) for name, build in sorted(EXAMPLES.items())}
    seeds["unfused_layer"] = str(unfused_graph(Layer()))
    seeds["unfused_2_layers"] = str(unfused_graph(Layer(num_layers=2, interleaved=True)))
    seeds["fused_layer"] = str(fused_graph(Layer()))
    seeds["attention_layer"] = str(attention_graph(Layer(), "attn"))
    seeds["gptq_attention_unfused"] = str(gptq_attention_graph(num_layers=1, fused=False))
    seeds["gptq_attention_fused"] = str(gptq_attention_graph(num_layers=2, fused=True))
    return seeds
