"""IREE CPU on the demo's layer and steps (`fusegraph demo`'s 3 steps): the in-place module
(now) against the functional form (before), same graph, same process.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/iree_cpu_demo_timing.py
"""

import fusegraph
from fusegraph import DeviceRef
from fusegraph.demo.tour import build_graph, make_layer, reference_outputs, run_steps, step_inputs

dev = DeviceRef.CPU()
layer = make_layer(dev, fuse=False)
g = build_graph(layer, dev, "attn")
xs = step_inputs()
ref_outs, ref_cache = reference_outputs(layer, xs)
for inplace in (False, True):
    m = fusegraph.compile(
        g, backend="iree", device="cpu", weights=layer.weights, pipeline="default", inplace=inplace
    )
    run_steps(m, layer, xs, "cpu")
    times = []
    for _ in range(7):
        outs, cache, s = run_steps(m, layer, xs, "cpu")
        times.append(s)
    err = max(float((o - r).abs().max()) for o, r in zip(outs, ref_outs))
    print(
        f"iree cpu fused inplace={inplace}: 3 steps min {min(times) * 1e3:.2f} ms, median {sorted(times)[3] * 1e3:.2f} ms over 7 runs; max |out-ref| {err:.2e}"
    )
