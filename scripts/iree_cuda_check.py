"""Check the IREE CUDA backend on an H100: compile here, run on the GPU box.

The GPU box has torch 2.11+cu130, triton 3.6 and Python 3.12, but no torch-mlir and no IREE
compiler. So the work is split in two:

1. **compile** (here, on the dev machine with iree-base-compiler): build a 2-layer
   `GPTQAttentionWithRope` stack (fused rope-split-store, 4-bit, act order), lower it
   (decomposed torch-mlir), compile it for CUDA sm_90 and for the host CPU, and run the eager
   CPU backend over a ragged prefill + 2 decode steps of a paged batch to record reference
   tensors. Writes `OUT/attn.cuda.vmfb`, `OUT/attn.cpu.vmfb`, `OUT/reference.npz` (no pickle)
   and `OUT/manifest.json`.
2. **run** (on the GPU box; needs only numpy + iree-base-runtime, never torch-mlir, the IREE
   compiler or fusegraph): load the `.vmfb` with iree.runtime's `cuda` driver, upload the
   weights once, run the steps threading its own KV cache, compare every output and the
   whole KV cache with the reference, print max errors and a decode-step time; exit 1 on a
   mismatch.

Usage:
    # here (about a minute on 2 cores):
    .venv/bin/python scripts/iree_cuda_check.py compile --out build/iree_cuda_check
    # self-test of the runner here, on the CPU module:
    .venv/bin/python scripts/iree_cuda_check.py run --dir build/iree_cuda_check --driver local-task

    # on the GPU box: carry `build/iree_cuda_check` (ignored by git) and `.whl` (it holds
    # iree_base_runtime-3.13.0 cp312 + ml_dtypes + numpy wheels), then run:
    pip install -q --no-index --find-links .whl iree-base-runtime ml_dtypes && \
        python scripts/iree_cuda_check.py run --dir build/iree_cuda_check --driver cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

STEPS = ([7, 12, 1, 3], [1, 1, 1, 1], [1, 1, 1, 1])  # a ragged prefill, then 2 decode steps
SHAPE = {"hidden": 256, "n_heads": 8, "n_kv_heads": 4, "head_dim": 32, "page_size": 16, "num_blocks": 32}


# --- compile (dev machine) ------------------------------------------------------------
def build_model(num_layers: int, seed: int) -> tuple[Any, dict[str, Any], Any]:
    """A `num_layers` GPTQ attention stack: (graph, weights, kv_params)."""
    from fusegraph import DeviceRef, DType, Graph, TensorType
    from fusegraph.nn import PagedCacheValues
    from fusegraph.runtime import PagedKVCacheManager

    cpu = DeviceRef.CPU()
    model, rope, kv_params = _gptq_stack(num_layers, seed)
    manager = PagedKVCacheManager(kv_params, num_blocks=SHAPE["num_blocks"])
    inputs = [
        TensorType(DType.float32, ["total_seq_len", SHAPE["hidden"]], cpu),
        TensorType(DType.uint32, ["batch_plus_1"], cpu),
        *manager.input_types(),
    ]
    with Graph("gptq_attn_cuda_check", input_types=inputs) as g:
        x, row_offsets, *kv_inputs = g.inputs
        kv = PagedCacheValues(*kv_inputs)
        for i, block in enumerate(model.layers):
            x = block.self_attn(i, x, kv, rope.freqs_cis, row_offsets)
        g.output(x)
    return g, model.state_dict(), kv_params


def _gptq_stack(num_layers: int, seed: int) -> tuple[Any, Any, Any]:
    """`model.layers[i].self_attn`: 4-bit act-order GPTQ attention with random weights."""
    import torch

    from fusegraph import DeviceRef, DType
    from fusegraph.nn import (
        GPTQAttentionWithRope,
        KVCacheParams,
        LayerList,
        Module,
        QuantizationConfig,
        RotaryEmbedding,
        quantize_gptq_projections,
    )  # fmt: skip

    s = SHAPE
    kv_params = KVCacheParams(
        dtype=DType.float32, n_kv_heads=s["n_kv_heads"], head_dim=s["head_dim"], num_layers=num_layers,
        page_size=s["page_size"], devices=[DeviceRef.CPU()],
    )  # fmt: skip
    rope = RotaryEmbedding(
        dim=s["hidden"], n_heads=s["n_heads"], theta=1e4, max_seq_len=256, interleaved=False
    )
    quant = QuantizationConfig(bits=4, group_size=64, desc_act=True, sym=False)
    model = Module()
    model.layers = LayerList([Module() for _ in range(num_layers)])
    q_dim, kv_dim, hidden = s["n_heads"] * s["head_dim"], s["n_kv_heads"] * s["head_dim"], s["hidden"]
    shapes = {
        "q_proj": (q_dim, hidden),
        "k_proj": (kv_dim, hidden),
        "v_proj": (kv_dim, hidden),
        "o_proj": (hidden, q_dim),
    }
    gen = torch.Generator().manual_seed(seed)
    for block in model.layers:
        block.self_attn = GPTQAttentionWithRope(
            quantization_config=quant, rope=rope, num_attention_heads=s["n_heads"],
            num_key_value_heads=s["n_kv_heads"], hidden_size=hidden, kv_params=kv_params,
        )  # fmt: skip
        dense = {p: torch.randn(*shape, generator=gen) / hidden**0.5 for p, shape in shapes.items()}
        block.self_attn.load_state_dict(quantize_gptq_projections(dense, quant))
    return model, rope, kv_params


def record_reference(graph: Any, weights: dict[str, Any], kv_params: Any) -> dict[str, Any]:
    """Run STEPS through the eager CPU backend; returns the arrays for reference.npz."""
    import torch

    import fusegraph
    from fusegraph.runtime import PagedKVCacheManager

    model = fusegraph.compile(graph, backend="eager", device="cpu", weights=weights)
    manager = PagedKVCacheManager(kv_params, num_blocks=SHAPE["num_blocks"])
    seqs = [manager.claim(max_len=64) for _ in STEPS[0]]
    gen = torch.Generator().manual_seed(1)
    arrays = {f"w{i}": weights[name].numpy() for i, name in enumerate(graph.weights)}
    for step, tokens in enumerate(STEPS):
        batch = manager.prepare(seqs, tokens)
        inputs = [
            torch.randn(sum(tokens), SHAPE["hidden"], generator=gen),
            batch.row_offsets,
            *batch.kv_inputs,
        ]
        arrays.update({f"s{step}_in{i}": t.clone().numpy() for i, t in enumerate(inputs)})
        outputs = model(*inputs)
        arrays.update({f"s{step}_out{j}": o.numpy() for j, o in enumerate(outputs)})
        arrays[f"s{step}_kv"] = manager.kv_blocks.clone().numpy()
        manager.commit(seqs, tokens)
    return arrays


def compile_artifacts(out: Path, num_layers: int, seed: int) -> None:
    """Write the two .vmfb files, reference.npz and manifest.json under `out`."""
    import numpy as np

    from fusegraph.compiler.lowering import to_torch_mlir
    from fusegraph.runtime.iree_backend import compile_vmfb, target_flags

    out.mkdir(parents=True, exist_ok=True)
    graph, weights, kv_params = build_model(num_layers, seed)
    mlir = to_torch_mlir(graph, mode="decomposed", output_type="torch", dump_dir=out / "mlir")
    for device in ("cuda", "cpu"):
        start = time.perf_counter()
        path, _ = compile_vmfb(mlir.text, target_flags(device), name=device)  # the default cache
        shutil.copy(path, out / f"attn.{device}.vmfb")
        print(f"compiled {device}: {time.perf_counter() - start:.1f}s -> {out / f'attn.{device}.vmfb'}")
    np.savez(out / "reference.npz", **record_reference(graph, weights, kv_params))
    manifest = {
        "function": "main",
        "num_inputs": len(graph.block.args),
        "num_weights": len(graph.weights),
        "num_outputs": len(graph.outputs),
        "kv_input": 2,
        "steps": [list(t) for t in STEPS],
        "tolerance": 1e-4,
        "lowering_seconds": mlir.timings,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"wrote {out}/reference.npz and manifest.json ({len(graph.weights)} weights, {num_layers} layers)")


# --- run (GPU box: numpy + iree.runtime only) --------------------------------------------
def run_artifacts(folder: Path, driver: str, repeats: int) -> int:
    """Run the steps on `driver` and compare with the reference; returns the exit code."""
    import numpy as np

    manifest = json.loads((folder / "manifest.json").read_text())
    ref = np.load(folder / "reference.npz", allow_pickle=False)
    invoke, device = _load(folder / f"attn.{'cpu' if driver.startswith('local') else 'cuda'}.vmfb", driver)
    import iree.runtime as rt

    weights = [rt.asdevicearray(device, ref[f"w{i}"]) for i in range(manifest["num_weights"])]
    n_out, kv_index, tol = manifest["num_outputs"], manifest["kv_input"], manifest["tolerance"]
    kv = ref["s0_in2"]
    worst = 0.0
    for step, tokens in enumerate(manifest["steps"]):
        inputs = [ref[f"s{step}_in{i}"] for i in range(manifest["num_inputs"])]
        inputs[kv_index] = kv  # our own cache, threaded from the previous step
        results = invoke(*inputs, *weights)
        outputs = [results[j].to_host() for j in range(n_out)]
        kv = results[n_out].to_host()
        errors = [_rel_error(o, ref[f"s{step}_out{j}"]) for j, o in enumerate(outputs)]
        errors.append(_rel_error(kv, ref[f"s{step}_kv"]))
        worst = max(worst, *errors)
        print(
            f"step {step} tokens {tokens}: output err {max(errors[:-1]):.3e}, kv cache err {errors[-1]:.3e}"
        )
    _time_decode(invoke, inputs, weights, repeats)
    ok = worst <= tol
    print(f"iree {driver}: max error {worst:.3e} (tolerance {tol:.0e}): {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def _load(vmfb: Path, driver: str) -> tuple[Any, Any]:
    import iree.runtime as rt

    config = rt.Config(driver)
    context = rt.SystemContext(config=config)
    context.add_vm_module(rt.VmModule.mmap(config.vm_instance, str(vmfb)))
    print(f"loaded {vmfb} on {driver}: {config.device}")
    return context.modules.module["main"], config.device


def _rel_error(got: Any, want: Any) -> float:
    import numpy as np

    got = got.view(want.dtype) if got.dtype != want.dtype and got.itemsize == want.itemsize else got
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
    return float(diff / max(1.0, float(np.abs(want.astype(np.float64)).max())))


def _time_decode(invoke: Any, inputs: list[Any], weights: list[Any], repeats: int) -> None:
    invoke(*inputs, *weights)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        results = invoke(*inputs, *weights)
    results[0].to_host()  # wait for the last call
    ms = (time.perf_counter() - start) / repeats * 1e3
    print(f"decode step (incl. host<->device copies of inputs and kv cache): {ms:.3f} ms over {repeats} runs")


def main(argv: list[str] | None = None) -> int:
    """`compile` (dev machine) or `run` (GPU box)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="lower + compile for cuda and cpu, record the eager reference")
    c.add_argument("--out", type=Path, default=Path("build/iree_cuda_check"))
    c.add_argument("--layers", type=int, default=2)
    c.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="run the .vmfb with iree.runtime and compare with the reference")
    r.add_argument("--dir", type=Path, default=Path("build/iree_cuda_check"))
    r.add_argument("--driver", default="cuda", help="cuda (GPU box) or local-task (self-test here)")
    r.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "compile":
        compile_artifacts(args.out, args.layers, args.seed)
        return 0
    return run_artifacts(args.dir, args.driver, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
