"""GPU decode step of a whole Llama-3-8B-shaped GPTQ model (one CUDA graph) vs transformers.

Usage: `python benchmarks/gpu_model.py [--batch 1 32] [--ctx 2048] [--budget-s 200] [--skip-hf]`

For each batch size it times one decode step (every sequence holding `ctx` cached tokens and
adding one) of:

- fusegraph: `DecoderModel` (32 layers, 4-bit GPTQ g128 sym, desc_act=False, or True with --act-order:
  rows in a random order per projection; q/k/v and gate/up are stacked, fp16 activations and KV
  cache, dense fp16 lm_head), built, passed through the default pipeline and compiled eager on
  CUDA with `cuda_graphs=True`: one CUDA graph per step, timed end to end through `run(...)`
  (input copies, replay, output clone);
- transformers' `LlamaForCausalLM` in fp16 with a `StaticCache`, eager and under
  `torch.compile(mode="reduce-overhead")`;
- the bytes floor: the bytes one step must read (int4 or fp16 weights, the fp16 lm_head, the
  KV cache of every sequence) over the device-to-device copy bandwidth measured here.

Weights are random (GPTQ words random bits, symmetric zeros, unit-gain scales; the KV cache
random), never zeros.
It prints ms/step and tokens/s. Stages that would overrun `--budget-s` are skipped and said so.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontend import LLAMA3_8B  # noqa: E402

from fusegraph.compiler import DeviceRef, DType  # noqa: E402
from fusegraph.nn import DecoderModel  # noqa: E402
from fusegraph.ops.gptq import act_order_g_idx  # noqa: E402
from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager  # noqa: E402

PAGE = 128
START = time.perf_counter()
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the code paths (--tiny)
SHAPE = LLAMA3_8B


def elapsed() -> float:
    """Seconds since the script started."""
    return time.perf_counter() - START


def time_steps(step: Any, iters: int = 30, warmup: int = 3) -> float:
    """Median ms of `step()` over `iters` runs, each timed with CUDA events."""
    for _ in range(warmup):
        step()
    if DEV == "cpu":
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2]
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def copy_bandwidth() -> float:
    """Bytes/s of a 4 GiB device-to-device copy (read + write counted)."""
    size = 2**31 if DEV == "cuda" else 2**24
    src = torch.empty(size, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    ms = time_steps(lambda: dst.copy_(src), iters=10)
    return 2 * size / (ms / 1e3)


def step_bytes(bs: int, ctx: int, int4: bool) -> int:
    """The fewest bytes one decode step reads: weights once, lm_head, every sequence's KV."""
    c = SHAPE
    h, i, d = c.hidden_size, c.intermediate_size, c.head_dim
    per_layer = (
        h * (c.num_attention_heads + 2 * c.num_key_value_heads) * d
        + c.num_attention_heads * d * h
        + 3 * h * i
    )
    # int4: 4 bits per weight + one fp16 scale and one 4-bit zero per 128 weights of a column
    weights = per_layer * (0.5 + 2.5 / 128) if int4 else per_layer * 2
    kv = bs * (ctx + 1) * 2 * c.num_key_value_heads * d * 2
    return int(c.num_hidden_layers * (weights + kv) + c.vocab_size * h * 2 + bs * h * 2)


def random_state(model: DecoderModel) -> dict[str, torch.Tensor]:
    """Random weights on the device for every parameter, of unit gain per projection so that
    32 fp16 layers stay far inside fp16's range: GPTQ words random bits (q uniform in 0..15),
    zeros the symmetric 8 (v1 stores 7: 0x77777777), scales about 1/(4.6·sqrt(K)) (q - 8 has
    std 4.6). Random zeros (z in 1..16) give each group a mean offset, the residual then grows
    by ~2500 a layer and passes 65504 near layer 25 (seen on the CPU, 2026-11-30)."""
    state = {}
    for name, spec in model.named_params():
        shape, dtype = spec.shape, spec.dtype.to_torch()
        if name.endswith("qzeros"):
            state[name] = torch.full(shape, 0x77777777, dtype=torch.int32, device=DEV)
        elif name.endswith("g_idx"):  # act-order: the rows quantized in a random order, 128 a group
            state[name] = act_order_g_idx(torch.randperm(shape[0], device=DEV), 128)
        elif dtype == torch.int32:
            state[name] = torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32, device=DEV)
        elif name.endswith("scales"):
            k = shape[0] * 128  # group size 128 (the model's config)
            gain = torch.rand(shape, device=DEV) * 0.4 + 0.8
            state[name] = (gain / (4.6 * k**0.5)).to(dtype)
        elif "norm" in name:
            state[name] = torch.ones(shape, dtype=dtype, device=DEV)
        else:
            state[name] = (torch.randn(shape, device=DEV) * 0.02).to(dtype)
    return state


def decode_inputs(
    model: DecoderModel, num_blocks: int, bs: int, ctx: int
) -> tuple[PagedKVCacheManager, tuple[torch.Tensor, ...]]:
    """(the KV manager, a decode step's inputs): `bs` sequences holding `ctx` cached tokens (random KV) add one."""
    manager = model.kv_manager(num_blocks)
    manager.kv_blocks.normal_(0, 1)
    seqs = [manager.claim(max_len=ctx + 1) for _ in range(bs)]
    manager.prepare(seqs, [ctx] * bs)
    manager.commit(seqs, [ctx] * bs)  # as if `ctx` tokens had been prefilled
    batch = manager.prepare(seqs, [1] * bs)
    tokens = torch.randint(0, model.config.vocab_size, (bs,), device=DEV)
    return manager, (tokens, batch.row_offsets, *batch.kv_inputs)


def fusegraph_model(batches: list[int], ctx: int) -> dict[int, float]:
    """ms/step of the fusegraph model at each batch size."""
    config = replace(SHAPE, dtype=DType.float16 if DEV == "cuda" else DType.float32)
    model = DecoderModel(
        config,
        device=DeviceRef.GPU(0) if DEV == "cuda" else DeviceRef.CPU(),
        stacked_qkv=True,
        stacked_gate_up=True,
        max_seq_len=ctx + 64,
        page_size=PAGE,
    )
    model.load_state_dict(random_state(model))
    pages = -(-(ctx + 1) // PAGE)
    num_blocks = max(batches) * pages
    t = time.perf_counter()
    run = model.compile(num_blocks, device=DEV, pipeline="default", cuda_graphs=DEV == "cuda")
    print(f"fusegraph: pipeline {run.pipeline!r}, compile {time.perf_counter() - t:.1f}s", flush=True)
    results = {}
    for bs in batches:
        manager, inputs = decode_inputs(model, num_blocks, bs, ctx)
        (logits,) = run(*inputs)  # warm-up + capture
        (logits,) = run(*inputs)
        finite = bool(torch.isfinite(logits).all())
        print(
            f"fusegraph bs {bs}: logits {tuple(logits.shape)} finite={finite} absmax={_absmax(logits)}",
            flush=True,
        )
        if not finite and bs == batches[0]:
            diagnose(model, inputs, num_blocks)
        results[bs] = time_steps(lambda inputs=inputs: run(*inputs))
        print(f"fusegraph bs {bs}: {results[bs]:.3f} ms/step ({elapsed():.0f}s)", flush=True)
        del manager
        if DEV == "cuda":
            torch.cuda.empty_cache()
    return results


def _absmax(x: torch.Tensor) -> float:
    finite = x[torch.isfinite(x)]
    return float(finite.abs().max()) if finite.numel() else float("nan")


def _one_step(
    model: DecoderModel, num_blocks: int, device: str, pipeline: str | None, graphs: bool
) -> torch.Tensor:
    """Logits of one decode step (bs 1, 64 random cached tokens, seeded) of `model` on `device`."""
    torch.manual_seed(1)
    run = model.compile(num_blocks, device=device, pipeline=pipeline, cuda_graphs=graphs)
    manager = model.kv_manager(num_blocks)
    manager.kv_blocks.copy_(torch.randn(manager.kv_blocks.shape).to(manager.kv_blocks.dtype))
    seqs = [manager.claim(max_len=65)]
    manager.prepare(seqs, [64])
    manager.commit(seqs, [64])
    batch = manager.prepare(seqs, [1])
    tokens = torch.tensor([7], device=manager.kv_blocks.device)
    (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
    if graphs:
        (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
    return logits.float().cpu()


def diagnose(model: DecoderModel, inputs: tuple[torch.Tensor, ...], num_blocks: int) -> None:
    """Non-finite logits: which part of the CUDA path makes them (repack kernels, CUDA graphs,
    depth), against the CPU decomposition on a 1-layer model of the same shapes."""
    plain = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce"
    for name, pipeline, graphs in (
        ("default, no graphs", "default", False),
        ("no gptq-repack", plain, False),
    ):
        (logits,) = model.compile(num_blocks, device=DEV, pipeline=pipeline, cuda_graphs=graphs)(*inputs)
        ok = bool(torch.isfinite(logits).all())
        print(
            f"diagnose {model.config.num_hidden_layers} layers, {name}: finite={ok} absmax={_absmax(logits)}",
            flush=True,
        )
    one = DecoderModel(
        replace(model.config, num_hidden_layers=1, sliding_windows=(None,)),
        dtype=model.dtype,
        device=model.device,
        stacked_qkv=True,
        stacked_gate_up=True,
        max_seq_len=256,
        page_size=PAGE,
    )
    torch.manual_seed(0)
    state = random_state(one)
    one.load_state_dict(state)
    cpu = DecoderModel(
        one.config,
        dtype=DType.float32,
        stacked_qkv=True,
        stacked_gate_up=True,
        max_seq_len=256,
        page_size=PAGE,
    )
    cpu.load_state_dict(
        {
            k: v.cpu().float() if v.is_floating_point() and "scales" not in k else v.cpu()
            for k, v in state.items()
        }
    )
    reference = _one_step(cpu, 2, "cpu", "default", False)
    for name, pipeline, graphs in (
        ("default + graphs", "default", DEV == "cuda"),
        ("no gptq-repack", plain, False),
    ):
        got = _one_step(one, 2, DEV, pipeline, graphs)
        err = float((got - reference).abs().max())
        print(
            f"diagnose 1 layer fp16 {name}: finite={bool(torch.isfinite(got).all())} "
            f"max|cuda - cpu f32| = {err:.3e} (cpu absmax {_absmax(reference):.2f})",
            flush=True,
        )


def hf_model(
    batches: list[int], ctx: int, budget_s: float, compile_est_s: float
) -> dict[str, dict[int, float]]:
    """ms/step of transformers' LlamaForCausalLM (fp16, StaticCache), eager and compiled."""
    from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

    c = SHAPE
    config = LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=131072, rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    )  # fmt: skip
    torch.set_default_dtype(torch.float16 if DEV == "cuda" else torch.float32)
    with torch.device(DEV):
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    out: dict[str, dict[int, float]] = {"eager": {}, "compiled": {}}
    compiled = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    for kind, forward in (("eager", model.forward), ("compiled", compiled)):
        for bs in batches:
            if elapsed() + (compile_est_s if kind == "compiled" else 0.0) > budget_s:
                print(f"transformers {kind} bs {bs}: skipped (past the {budget_s:.0f}s budget)", flush=True)
                continue
            cache = StaticCache(config=config, max_cache_len=ctx + 16)
            ids = torch.randint(0, c.vocab_size, (bs, 1), device=DEV)
            position = torch.tensor([ctx], device=DEV)

            def step(
                ids: torch.Tensor = ids,
                cache: Any = cache,
                position: torch.Tensor = position,
                forward: Any = forward,
            ) -> Any:
                with torch.no_grad():
                    return forward(input_ids=ids, past_key_values=cache, cache_position=position,
                                   position_ids=position[None].expand(ids.shape[0], 1), use_cache=True)  # fmt: skip

            t = time.perf_counter()
            step()
            first = time.perf_counter() - t
            out[kind][bs] = time_steps(step, iters=20)
            print(
                f"transformers {kind} bs {bs}: {out[kind][bs]:.3f} ms/step (first call {first:.1f}s, {elapsed():.0f}s)",
                flush=True,
            )
            del cache
    return out


def check_tiny() -> None:
    """Correct first: a tiny GPTQ act-order Llama (tests/models) on this device, eager + CUDA
    graphs, float32, against transformers on the same dequantized weights; prints the error."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fusegraph.nn import QuantizationConfig, load_model
    from tests.models.hf_models import make_model_dir

    folder = Path(tempfile.mkdtemp())
    quant = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    reference = make_model_dir("llama", folder, quant=quant).to(DEV)
    model = load_model(folder, device=DEV, dtype="float32")
    run = model.compile(16, device=DEV, cuda_graphs=DEV == "cuda")
    manager = model.kv_manager(16)
    prompts = [[5, 7, 9, 11, 3], [1, 2, 3], [42]]
    seqs = [manager.claim(max_len=32) for _ in prompts]
    worst, scale, new = 0.0, 0.0, prompts
    for _ in range(4):
        batch = manager.prepare(seqs, [len(n) for n in new])
        tokens = torch.tensor([t for n in new for t in n], device=DEV)
        (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, [len(n) for n in new])
        with torch.no_grad():
            expected = torch.stack([reference(torch.tensor([p], device=DEV)).logits[0, -1] for p in prompts])
        worst = max(worst, float((logits - expected.float()).abs().max()))
        scale = max(scale, float(expected.abs().max()))
        new = [[int(t)] for t in logits.argmax(-1)]
        prompts = [p + n for p, n in zip(prompts, new)]
    # The CLI's JSON contract on this device: `fusegraph model DIR --logits --json`.
    import contextlib
    import io
    import json

    from fusegraph.cli import main as cli

    ids = ";".join(",".join(map(str, p)) for p in prompts)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = cli(
            [
                "model",
                str(folder),
                "--logits",
                "--token-ids",
                ids,
                "--device",
                DEV,
                "--dtype",
                "float32",
                "--json",
            ]
        )
    with torch.no_grad():
        expected = (
            torch.stack([reference(torch.tensor([p], device=DEV)).logits[0, -1] for p in prompts])
            .float()
            .cpu()
        )
    cli_error = (
        float((torch.tensor(json.loads(out.getvalue())["logits"]) - expected).abs().max())
        if status == 0
        else None
    )
    print(
        f"check: fusegraph model --logits --device {DEV} --json: status {status}, max error {cli_error}",
        flush=True,
    )
    print(
        f"check: tiny GPTQ act-order Llama, f32, 4 steps, max |fusegraph - transformers| = {worst:.2e} (logits up to {scale:.2f})",
        flush=True,
    )


def main() -> None:
    """Run every stage and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--budget-s", type=float, default=200.0, help="skip transformers stages past this")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--skip-check", action="store_true", help="skip the tiny-model check against transformers"
    )
    parser.add_argument(
        "--compile-est-s",
        type=float,
        default=100.0,
        help="start torch.compile only this far inside the budget",
    )
    parser.add_argument(
        "--act-order",
        action="store_true",
        help="desc_act=True: every projection's rows in a random order (fold-act-order-permutation folds the"
        " q/k/v, gate/up and down permutations; FUSEGRAPH_FOLD_ACT_ORDER=0 leaves them to the runtime)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="2 layers, small dims (a dry run, e.g. on the CPU)"
    )
    args = parser.parse_args()
    global SHAPE
    if args.tiny:
        SHAPE = replace(LLAMA3_8B, vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=64, sliding_windows=(None, None))  # fmt: skip
    if args.act_order:
        assert SHAPE.quantization is not None
        SHAPE = replace(SHAPE, quantization=replace(SHAPE.quantization, desc_act=True))
    if DEV == "cpu":
        torch.set_num_threads(1)  # tiny matmuls on a shared CPU
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}", flush=True)
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    if not args.skip_check:
        check_tiny()
    ours = fusegraph_model(args.batch, args.ctx)
    if DEV == "cuda":
        torch.cuda.empty_cache()
    hf = {} if args.skip_hf else hf_model(args.batch, args.ctx, args.budget_s, args.compile_est_s)
    print(f"\ndecode step, {'tiny' if args.tiny else 'Llama-3-8B'} shape, ctx {args.ctx}: ms/step (tokens/s)")
    columns = ["fusegraph int4", "hf eager fp16", "hf compiled fp16", "floor fp16", "floor int4"]
    print(f"{'bs':>4} " + " ".join(f"{c:>22}" for c in columns))
    for bs in args.batch:
        floor16 = step_bytes(bs, args.ctx, int4=False) / bandwidth * 1e3
        floor4 = step_bytes(bs, args.ctx, int4=True) / bandwidth * 1e3
        cells = [ours.get(bs), hf.get("eager", {}).get(bs), hf.get("compiled", {}).get(bs), floor16, floor4]
        text = [f"{ms:9.3f} ({bs * 1e3 / ms:8.0f})" if ms else f"{'-':>20}" for ms in cells]
        print(f"{bs:>4} " + " ".join(f"{t:>22}" for t in text))


if __name__ == "__main__":
    main()
