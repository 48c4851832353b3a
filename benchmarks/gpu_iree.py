"""Benchmark the IREE CUDA path (in place, device-resident cache) against our Triton path.

The Llama-3-8B-shaped `GPTQAttentionWithRope` decode step (hidden 4096, 32 query / 8 KV
heads, head dim 128, 4-bit GPTQ group 128, fp16, paged cache of 128-token pages), batch 32,
context 2048. The GPU box has no torch-mlir and no IREE compiler, so:

1. **compile** (here): build the layer's graph, lower and compile it for CUDA as
   `IreeCompiledGraph` does (`iree_compile.compile_graph`: cache and outputs as mutable
   arguments), in the `VARIANTS` asked for: `dispatch` (the fused ops as our Triton kernels,
   IREE custom dispatches), `decomposed` (IREE's code for the aten decomposition), and
   `decomposed-rocmflag` (the flags used before the CUDA target fix). Writes
   `OUT/attn8b.cuda.<variant>.vmfb` and `OUT/manifest.json`.
2. **run** (GPU box; torch, triton, xdsl, iree-base-runtime): rebuild the same graph and
   weights (same seed), load each `.vmfb` into `IreeCompiledGraph(vmfb=...)` with the KV
   cache a torch CUDA tensor handed to IREE by DLPack, check it against the eager Triton
   path (outputs and the whole cache, on the decode step and on a ragged prefill), then time a
   decode step of each, count the bytes copied host<->device per step (CUPTI memcpy records
   through torch.profiler, and the backend's own counter), list the GPU kernel time per step,
   and split an IREE call into the host checks alone and the VM invoke alone.

Usage:
    .venv/bin/python benchmarks/gpu_iree.py compile --out build/iree_bench
    # GPU box, with build/iree_bench and .whl carried:
    python benchmarks/gpu_iree.py run --dir build/iree_bench [--variants dispatch] \
        [--iree-flags=--cuda_allow_inline_execution=true]
    # self-test here: compile/run --device cpu --tiny --variants decomposed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

HIDDEN, H, HKV, D, PAGE = 4096, 32, 8, 128, 128
BATCH, CTX = 32, 2048
LAYERS = 1  # `--layers`: chained attention layers on one cache


def use_tiny_shape() -> None:
    """A small layer for a CPU self-test of this script (`--tiny`)."""
    global HIDDEN, H, HKV, D, PAGE, BATCH, CTX
    HIDDEN, H, HKV, D, PAGE, BATCH, CTX = 256, 8, 4, 32, 16, 4, 64


def build(device: str) -> tuple[Any, dict[str, Any], Any]:
    """(graph, weights, kv_params) of `LAYERS` chained attention layers sharing one paged cache
    (weights `layers.<i>.self_attn.*`); weights are seeded, so identical anywhere."""
    import torch

    from fusegraph import DeviceRef, DType, Graph, TensorType
    from fusegraph.compiler.types import BufferType
    from fusegraph.nn import (
        GPTQAttentionWithRope,
        KVCacheParams,
        LayerList,
        Module,
        PagedCacheValues,
        QuantizationConfig,
        RotaryEmbedding,
    )
    from fusegraph.nn.checkpoint import quantize_gptq_projections

    dev = DeviceRef.GPU() if device == "cuda" else DeviceRef.CPU()
    kv_params = KVCacheParams(dtype=DType.float16, n_kv_heads=HKV, head_dim=D, num_layers=LAYERS, page_size=PAGE,
                              devices=[dev])  # fmt: skip
    rope = RotaryEmbedding(
        dim=HIDDEN, n_heads=H, theta=500000.0, max_seq_len=CTX, interleaved=False, device=dev
    )
    cfg = QuantizationConfig(bits=4, group_size=128, desc_act=False, sym=False)

    class Block(Module):  # the weight names of a decoder layer: layers.<i>.self_attn.*
        def __init__(self, self_attn: GPTQAttentionWithRope) -> None:
            super().__init__()
            self.self_attn = self_attn

    class Stack(Module):
        def __init__(self, layers: list[Block]) -> None:
            super().__init__()
            self.layers = LayerList(layers)

    gen = torch.Generator().manual_seed(0)
    blocks = []
    for _ in range(LAYERS):
        attn = GPTQAttentionWithRope(
            quantization_config=cfg, rope=rope, num_attention_heads=H, num_key_value_heads=HKV, hidden_size=HIDDEN,
            kv_params=kv_params, dtype=DType.float16, devices=[dev],
        )  # fmt: skip
        dense = {p: torch.randn(n, HIDDEN, generator=gen) * 0.02 for p, n in (("q_proj", H * D), ("k_proj", HKV * D),
                                                                             ("v_proj", HKV * D), ("o_proj", HIDDEN))}  # fmt: skip
        attn.load_state_dict(quantize_gptq_projections(dense, cfg))
        blocks.append(Block(attn))
    model = Stack(blocks)
    u32 = DType.uint32
    inputs: list[TensorType | BufferType] = [
        TensorType(DType.float16, ["total_seq_len", HIDDEN], dev),
        TensorType(u32, ["batch_plus_1"], dev),
        BufferType(DType.float16, kv_params.blocks_shape(BATCH * CTX // PAGE), dev),  # as the manager's
        TensorType(u32, ["batch"], dev),
        TensorType(u32, ["batch", "max_pages"], dev),
    ]
    with Graph("attn8b", input_types=inputs) as g:
        x, ro, *kv_inputs = g.inputs
        kv = PagedCacheValues(*kv_inputs)  # one object: each layer's store moves it to the next cache version
        for i, block in enumerate(blocks):
            x = block.self_attn(i, x, kv, rope.freqs_cis, ro)
        g.output(x)
    return g, model.state_dict(), kv_params


def _pipeline(graph: Any, device: str) -> Any:
    """The graph as `compile()` runs it for IREE (the default pipeline)."""
    from fusegraph.runtime.pipeline import run_pipeline

    return run_pipeline(graph, "default", "iree", device)[0]


# The modules compiled and compared: name -> (dispatches, target flags or None for the default).
VARIANTS = {
    "dispatch": (True, None),  # our Triton kernels as IREE custom dispatches
    "decomposed": (False, None),  # IREE's own code for the decomposed ops (right target)
    "decomposed-rocmflag": (
        False,
        ["--iree-hal-target-device=cuda", "--iree-rocm-target=sm_90"],
    ),  # before 325d691
}


def compile_artifacts(out: Path, device: str, variants: list[str]) -> None:
    from fusegraph.runtime.iree_backend import target_flags
    from fusegraph.runtime.iree_compile import compile_graph
    from fusegraph.runtime.iree_inplace import consume_safe

    out.mkdir(parents=True, exist_ok=True)
    graph = _pipeline(build(device)[0], device)
    manifest: dict[str, Any] = {"graph_sha": _sha(graph), "consume_written_buffers": consume_safe(graph)}
    for variant in variants:
        dispatches, flags = VARIANTS[variant]
        start = time.perf_counter()
        mlir, path, _ = compile_graph(
            graph, flags or target_flags(device), dispatches=dispatches and device == "cuda"
        )
        (out / f"attn8b.{device}.{variant}.vmfb").write_bytes(path.read_bytes())
        manifest[variant] = {"compile_s": time.perf_counter() - start, "lowering": mlir.mode, "flags": flags}
        print(f"{variant}: {mlir.mode} lowering, compiled in {manifest[variant]['compile_s']:.1f} s")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _sha(graph: Any) -> str:
    return hashlib.sha256(str(graph).encode()).hexdigest()[:16]


def _memcpy_bytes(fn: Any, steps: int) -> dict[str, float]:
    """Bytes per step of the CUDA memcpys CUPTI records (torch's and IREE's alike)."""
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.loads(Path(f.name).read_text()).get("traceEvents", [])
    totals = {"HtoD": 0.0, "DtoH": 0.0, "DtoD": 0.0}
    kernels: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "kernel":
            kernels[e.get("name", "?")[:60]] = (
                kernels.get(e.get("name", "?")[:60], 0.0) + e.get("dur", 0) / steps
            )
        if e.get("cat") == "gpu_memcpy":
            kind = next((k for k in totals if k in e.get("name", "")), None)
            if kind is not None:
                totals[kind] += e.get("args", {}).get("bytes", 0)
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:10]
    print(f"    GPU kernel time per step {sum(kernels.values()):.1f} us: "
          + "; ".join(f"{n} {us:.1f}" for n, us in top))  # fmt: skip
    return {k: v / steps for k, v in totals.items()}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_ms(fn: Any, reps: int) -> float:
    fn()
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync()
    return (time.perf_counter() - start) / reps * 1e3


def _errors(y: Any, y_ref: Any, kv: Any, kv_ref: Any) -> tuple[float, float, bool]:
    """(output max rel err, whole-cache max abs err, both bit-identical)."""
    out_err = float((y.float() - y_ref.float()).abs().max() / y_ref.float().abs().max())
    kv_err = float((kv.float() - kv_ref.float()).abs().max())
    return out_err, kv_err, bool((y == y_ref).all() and (kv == kv_ref).all())


def _overheads(iree: Any, inputs: list[Any], reps: int) -> None:
    """Where an IREE call's time goes: the backend's host checks alone, and the VM invoke alone
    (arguments imported once, outputs allocated once; reads the backend's private members)."""
    import torch

    from fusegraph.runtime.eager import check_inputs

    def checks() -> None:
        dims = check_inputs(iree.input_types, inputs, iree.device)
        if iree._device_guards is None:
            iree.input_checks.check(inputs, dims)
            return
        iree.input_checks.check_host(inputs, dims)
        iree._device_guards.launch(inputs, dims)
        iree._device_guards.publish(inputs)
        torch.cuda.current_stream().synchronize()
        iree._device_guards.raise_if_refused(inputs)

    keep: list[Any] = []
    args = [iree._argument(t, keep)[0] for t in inputs]
    out = torch.empty(inputs[0].shape, dtype=inputs[0].dtype, device=inputs[0].device)
    out_arg = iree._argument(out, keep)[0]

    def imports() -> None:
        held: list[Any] = []
        for t in [*inputs, out]:
            iree._argument(t, held)

    check_ms = _time_ms(checks, reps)
    import_ms = _time_ms(imports, reps)
    invoke_ms = _time_ms(lambda: iree._function(*args, *iree._weights, out_arg), reps)
    print(f"    of which: input checks alone ({'device' if iree.device_checks else 'host'}) {check_ms * 1e3:.1f} us; DLPack imports of the {len(inputs) + 1} arguments {import_ms * 1e3:.1f} us; IREE VM invoke alone (prebuilt "
          f"arguments) {invoke_ms * 1e3:.1f} us", flush=True)  # fmt: skip


def _guards(iree: Any, kv_params: Any, blocks: int, decode: list[Any]) -> None:
    """The dispatch module's refusals: a batch above the attention kernel's tile and a call with
    no rows (the module's entry checks), bad metadata (the input checks); the cache must stay
    untouched."""
    import torch

    from fusegraph.runtime import PagedKVCacheManager
    from fusegraph.runtime.iree_dispatch_ir import DispatchOptions

    def attempt(label: str, inputs: list[Any]) -> None:
        kv = inputs[2]
        kv.fill_(3.0)
        before = kv.clone()
        try:
            iree(*inputs)
            outcome = "ran (not refused)"
        except Exception as err:  # noqa: BLE001 - report whatever IREE or the checks raise
            outcome = f"refused: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        print(f"    guard, {label}: {outcome}; cache untouched {torch.equal(kv, before)}", flush=True)

    n = DispatchOptions().max_batch + 1
    if n <= blocks:
        m = PagedKVCacheManager(kv_params, num_blocks=blocks)
        st = m.prepare([m.claim(max_len=CTX) for _ in range(n)], [1] * n)
        xg = torch.randn(n, HIDDEN, device=decode[0].device, dtype=decode[0].dtype)
        attempt(f"batch {n} > max_batch", [xg, st.row_offsets, m.kv_blocks, st.kv_inputs[1], st.kv_inputs[2]])
    x, ro, kv, lens, lut = decode
    attempt("0 rows", [x[:0], torch.zeros_like(ro), kv, lens, lut])
    falling = ro.clone()
    falling[1], falling[2] = 2, 1
    attempt("row offsets 0, 2, 1, ... (falling)", [x, falling, kv, lens, lut])
    past = lut.clone()
    past[0, int(lens[0]) // kv.shape[3]] = kv.shape[0] + 5  # the page sequence 0 writes this step
    attempt("a written page past num_blocks", [x, ro, kv, lens, past])


def run(folder: Path, reps: int, device: str, variants: list[str], iree_flags: list[str]) -> int:
    import torch

    if iree_flags:  # IREE runtime flags (e.g. --cuda_allow_inline_execution=true), before any device
        import iree.runtime as rt

        rt.flags.parse_flags(*iree_flags)
        print(f"IREE runtime flags: {' '.join(iree_flags)}")

    import fusegraph
    from fusegraph.runtime import PagedKVCacheManager
    from fusegraph.runtime.iree_backend import IreeCompiledGraph

    graph, weights, kv_params = build(device)
    fused = _pipeline(graph, device)
    manifest = json.loads((folder / "manifest.json").read_text())
    if _sha(fused) != manifest["graph_sha"]:
        print(f"WARNING: graph sha {_sha(fused)} != compiled {manifest['graph_sha']}")
    weights = {n: t.to(device) for n, t in weights.items()}
    blocks = BATCH * CTX // PAGE
    manager = PagedKVCacheManager(kv_params, num_blocks=blocks)
    manager.kv_blocks.normal_(generator=torch.Generator(device=device).manual_seed(1))
    seqs = [manager.claim(max_len=CTX) for _ in range(BATCH)]
    manager.prepare(seqs, [CTX - 1] * BATCH)
    manager.commit(seqs, [CTX - 1] * BATCH)
    step = manager.prepare(seqs, [1] * BATCH)
    x = torch.randn(BATCH, HIDDEN, device=device, dtype=torch.float16)
    kv0 = manager.kv_blocks.clone()
    # a ragged prefill of new sequences on a second cache (sentinel-filled): another total_seq_len
    pre = PagedKVCacheManager(kv_params, num_blocks=blocks)
    pre.kv_blocks.fill_(-7.0)
    lengths = [min(CTX, n) for n in (100, 37, 3 * PAGE, 1)]
    pstep = pre.prepare([pre.claim(max_len=CTX) for _ in lengths], lengths)
    xp = torch.randn(sum(lengths), HIDDEN, device=device, dtype=torch.float16)
    cache_mb = kv0.numel() * kv0.element_size() / 2**20
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"{name}; bs {BATCH}, ctx {CTX}, KV cache {cache_mb:.0f} MiB (fp16)")

    eager = fusegraph.compile(graph, backend="eager", device=device, weights=weights)
    graphs = fusegraph.compile(
        graph, backend="eager", device=device, weights=weights, cuda_graphs=device == "cuda"
    )

    def call(model: Any, kv: torch.Tensor) -> torch.Tensor:
        return model(x, step.row_offsets, kv, step.kv_inputs[1], step.kv_inputs[2])[0]

    def prefill(model: Any, kv: torch.Tensor) -> torch.Tensor:
        return model(xp, pstep.row_offsets, kv, pstep.kv_inputs[1], pstep.kv_inputs[2])[0]

    kv_ref, kvp_ref = kv0.clone(), pre.kv_blocks.clone()
    y_ref, yp_ref = call(eager, kv_ref), prefill(eager, kvp_ref)
    rows: dict[str, tuple[float, dict[str, float], dict[str, float] | None]] = {}

    def measure(label: str, model: Any, iree: Any = None) -> None:
        kv = kv0.clone()
        before = dict(iree.transfers) if iree is not None else {}
        ms = _time_ms(lambda: call(model, kv), reps)
        counted = (
            {k: (iree.transfers[k] - before[k]) / (reps + 1) for k in before} if iree is not None else None
        )
        traffic = _memcpy_bytes(lambda: call(model, kv), 5) if device == "cuda" else {}
        rows[label] = (ms, traffic, counted)
        print(f"{label:34s} {ms * 1e3:9.1f} us/step | CUPTI memcpy per step: H2D {traffic.get('HtoD', 0):.0f} B, "
              f"D2H {traffic.get('DtoH', 0):.0f} B, D2D {traffic.get('DtoD', 0):.0f} B"
              + (f" | backend counter h2d {counted['h2d']:.0f} B, d2h {counted['d2h']:.0f} B" if counted else ""),
              flush=True)  # fmt: skip

    measure("eager Triton", eager)
    measure("eager Triton + CUDA graphs", graphs)
    ok = True
    for variant in reversed(variants):  # decomposed first: a faulting custom kernel would end the process
        path = folder / f"attn8b.{device}.{variant}.vmfb"
        if variant not in manifest or not path.exists():
            continue
        start = time.perf_counter()
        custom = manifest[variant]["lowering"] == "custom"  # our kernels bound their reads: device checks
        iree = IreeCompiledGraph(fused, device=device, weights=weights, vmfb=path, device_checks=custom)
        print(f"[{variant}] ({manifest[variant]['lowering']} lowering, device checks {iree.device_checks}) loaded, weights uploaded in "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
        kv_i, kvp_i = kv0.clone(), pre.kv_blocks.clone()
        pointer = kv_i.data_ptr()
        y_i, yp_i = call(iree, kv_i), prefill(iree, kvp_i)
        out_err, kv_err, same = _errors(y_i, y_ref, kv_i, kv_ref)
        p_out, p_kv, p_same = _errors(yp_i, yp_ref, kvp_i, kvp_ref)
        in_place = kv_i.data_ptr() == pointer and bool((kv_i != kv0).any())
        print(f"[{variant}] vs eager Triton: decode bs {BATCH}: output rel err {out_err:.2e}, whole-cache max abs "
              f"err {kv_err:.2e}, bit-identical {same}; ragged prefill {lengths}: output rel err {p_out:.2e}, "
              f"whole-cache max abs err {p_kv:.2e}, bit-identical {p_same}; cache written in place "
              f"(data_ptr kept) {in_place}; zero-copy {iree.zero_copy} {iree.copy_reason}", flush=True)  # fmt: skip
        ok = ok and max(out_err, p_out) < 2e-2 and max(kv_err, p_kv) < 1e-2
        measure(f"iree {device} {variant}", iree, iree)
        _overheads(iree, [x, step.row_offsets, kv0.clone(), step.kv_inputs[1], step.kv_inputs[2]], reps)
        if custom:
            _guards(iree, kv_params, blocks, [x, step.row_offsets, kv0.clone(), *step.kv_inputs[1:]])
    act = x.numel() * 2 * 2  # x in, y out
    meta = sum(t.numel() * 4 for t in (step.row_offsets, step.kv_inputs[1], step.kv_inputs[2]))
    print(
        f"host<->device floor per step: activations {act} B if they crossed (x, y), metadata {meta} B; "
        f"activations here live on the GPU, so the floor is the metadata the host checks read ({meta} B)"
    )
    for label, (ms, _, _) in rows.items():
        print(f"{label:34s} / eager Triton {ms / rows['eager Triton'][0]:6.2f}x, "
              f"/ Triton + CUDA graphs {ms / rows['eager Triton + CUDA graphs'][0]:6.2f}x")  # fmt: skip
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="lower in place and compile for CUDA sm_90 (here)")
    c.add_argument("--out", type=Path, default=Path("build/iree_bench"))
    c.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r = sub.add_parser("run", help="check and time on the GPU box")
    r.add_argument("--dir", type=Path, default=Path("build/iree_bench"))
    r.add_argument("--reps", type=int, default=20)
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r.add_argument(
        "--iree-flags",
        nargs="*",
        default=[],
        help="IREE runtime flags, e.g. --cuda_allow_inline_execution=true",
    )
    for p in (c, r):
        p.add_argument("--layers", type=int, default=1, help="chained attention layers on one cache")
        p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a self-test here")
        p.add_argument("--tiny", action="store_true", help="a small layer (self-test)")
    args = parser.parse_args(argv)
    global LAYERS
    LAYERS = args.layers
    if args.tiny:
        use_tiny_shape()
    if args.command == "compile":
        compile_artifacts(args.out, args.device, args.variants)
        return 0
    return run(args.dir, args.reps, args.device, args.variants, args.iree_flags)


if __name__ == "__main__":
    sys.exit(main())
