"""The graphs the fuzzer mutates: real graphs built with the ops and nn API, printed.

Every registered op's round-trip example (`tests/compiler/op_examples.py`), the pass tests'
attention layers (fused, unfused, multi-layer), the lowering tests' GPTQ attention graphs
and two stacks of the nn attention layers. Importing this module also registers the custom ops those examples use, so a
worker that imports it parses the same dialect as the process that built the seeds.
"""

from __future__ import annotations

import functools

from tests.compiler.op_examples import EXAMPLES
from tests.lowering._graphs import gptq_attention_graph
from tests.nn.test_attention_ir import _graph as nn_attention_stack
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
    # the nn layers' own graphs: GPTQAttentionWithRope with QK-norm, AttentionWithRope unfused
    seeds["nn_gptq_attention_qk_norm"] = nn_attention_stack(fuse=True, gptq=True, qk_norm=True)
    seeds["nn_attention_unfused"] = nn_attention_stack(fuse=False, gptq=False, qk_norm=False)
    return seeds
