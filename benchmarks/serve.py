"""Serving benchmark: fusegraph's `Generator` on a Llama-3-8B-shaped GPTQ model vs transformers.

fusegraph: 32 layers, hidden 4096, GPTQ 4-bit (group 128, sym, no act-order) with random
weights, fp16 activations and KV cache; N requests (prompt P random tokens, O output tokens,
greedy, no stop token) all arriving at once, run with continuous batching, prefix caching off
(random prompts share nothing anyway) and decode CUDA graphs. Reports output tokens/s, and the
time per output token per request ((last token time - first token time) / (O - 1)): median
and p99, plus the time to the first token. Untimed first: the same workload once on other random
prompts (`--warmup full`), so that the timed pass compiles no Triton kernel and captures no graph.

transformers: `LlamaForCausalLM` with the same shapes in fp16 (dense: transformers has no GPTQ
kernel of its own), `generate(..., cache_implementation="static")` at batch B; its tokens/s
is measured on one batch of B prompts (the batches of a sequential run are identical).

    python benchmarks/serve.py --out results.json                 # the H200 run
    python benchmarks/serve.py --tiny --device cpu --requests 4   # a smoke test of the code
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

LLAMA3_8B = dict(
    model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
    max_position_embeddings=8192, torch_dtype="float16", tie_word_embeddings=False,
)  # fmt: skip
TINY = LLAMA3_8B | dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
GPTQ = dict(quant_method="gptq", bits=4, group_size=128, desc_act=False, sym=True)


def random_state(model: Any, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every parameter of a fusegraph `DecoderModel`, shaped like a real
    GPTQ checkpoint: uniform 4-bit values around the symmetric zero 8 (v1 stores 7), and
    scales that give each projection unit gain (`1 / (4.6 sqrt(K))`), so activations stay O(1)."""
    g = torch.Generator(device=device).manual_seed(seed)
    group = GPTQ["group_size"]
    state = {}
    for name, spec in model.named_params():
        dtype = spec.dtype.to_torch()
        if name.endswith("qzeros"):
            t = torch.full(spec.shape, 0x77777777, dtype=torch.int32, device=device)
        elif dtype == torch.int32:
            t = torch.randint(-(2**31), 2**31 - 1, spec.shape, dtype=torch.int32, device=device, generator=g)
        elif name.endswith("norm.weight"):
            t = torch.ones(spec.shape, dtype=dtype, device=device)
        elif name.endswith("scales"):
            t = torch.full(
                spec.shape, 1.0 / (4.6 * (spec.shape[0] * group) ** 0.5), dtype=dtype, device=device
            )
        else:
            scale = 1.0 if "embed_tokens" in name else spec.shape[-1] ** -0.5
            t = (torch.randn(spec.shape, device=device, generator=g) * scale).to(dtype)
        state[name] = t
    return state


def build_fusegraph(cfg: dict[str, Any], device: str, num_blocks: int, page_size: int) -> tuple[Any, Any]:
    """The GPTQ `DecoderModel` with random weights, compiled, and its KV manager."""
    from fusegraph.compiler.devices import DeviceRef
    from fusegraph.nn.decoder import DecoderModel
    from fusegraph.nn.hf_config import ModelConfig
    from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

    config = ModelConfig.from_dict(cfg | {"quantization_config": GPTQ})
    dev = DeviceRef.GPU(0) if device.startswith("cuda") else DeviceRef.CPU()
    model = DecoderModel(config, device=dev, page_size=page_size, stacked_qkv=True, stacked_gate_up=True)
    model.load_state_dict(random_state(model, device))
    compiled = model.compile(num_blocks, device=device)
    return compiled, PagedKVCacheManager(model.kv_params, num_blocks, prefix_caching=False)


def run_fusegraph(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """Serve `args.requests` random prompts at once; returns the measurements."""
    from fusegraph.generate import Generator, GeneratorStats, SamplingParams
    from fusegraph.generate.generator import DEFAULT_BUCKETS

    page = args.page_size
    # every request's pages, plus one scratch page per padding row of the widest decode bucket
    blocks = args.requests * -(-(args.prompt_len + args.output_len) // page) + max(DEFAULT_BUCKETS) - 1
    t0 = time.perf_counter()
    compiled, manager = build_fusegraph(cfg, args.device, blocks, page)
    setup_s = time.perf_counter() - t0
    gen = Generator(
        compiled, manager, max_batch_size=args.requests, max_tokens_per_step=args.tokens_per_step,
        max_seq_len=args.prompt_len + args.output_len,
        cuda_graph_batch_sizes=None if args.no_cuda_graphs else (1, 2, 4, 8, 16, 32, 64, 128, 256),
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, cfg["vocab_size"], (args.requests, args.prompt_len), generator=g).tolist()
    params = SamplingParams(max_new_tokens=args.output_len)
    # Warm-up, untimed: the same workload (other random prompts) once, so that every Triton
    # specialization the run meets is compiled and every decode graph it replays is captured
    # (last session's timed loop paid ~30 s of this). --warmup quick: a few small batches only.
    t0 = time.perf_counter()
    if args.warmup == "full":
        warm = torch.randint(0, cfg["vocab_size"], (args.requests, args.prompt_len), generator=g).tolist()
        gen.generate(warm, params)
    else:
        n = 16
        while n < args.requests:
            gen.generate([[1] * 8] * n, SamplingParams(max_new_tokens=1))
            n *= 2
        gen.generate([[1] * 8] * args.requests, SamplingParams(max_new_tokens=3))
    _sync(args.device)
    warmup_s = time.perf_counter() - t0
    gen.stats = GeneratorStats()
    times: dict[int, list[float]] = {}
    step_ms: list[float] = []
    start = time.perf_counter()
    ids = [gen.add_request(p, params) for p in prompts]
    last = start
    while gen.has_unfinished:
        events = gen.step()
        now = time.perf_counter()
        step_ms.append(1e3 * (now - last))
        last = now
        for e in events:
            times.setdefault(e.request_id, []).append(now)
    _sync(args.device)
    total = time.perf_counter() - start
    produced = sum(len(gen.output(i)) for i in ids)
    tpot = sorted((t[-1] - t[0]) / (len(t) - 1) for t in times.values() if len(t) > 1)
    ttft = sorted(t[0] - start for t in times.values())
    s = gen.stats
    out = {
        "setup_s": round(setup_s, 2), "warmup_s": round(warmup_s, 2), "total_s": round(total, 3), "output_tokens": produced,
        "output_tokens_per_s": round(produced / total, 1),
        "tpot_ms_median": round(1e3 * statistics.median(tpot), 2), "tpot_ms_p99": round(1e3 * _p99(tpot), 2),
        "ttft_s_median": round(statistics.median(ttft), 3), "steps": s.steps, "graph_replays": s.graph_replays,
        "preemptions": s.preemptions, "prefill_tokens": s.prefill_tokens, "decode_tokens": s.decode_tokens,
        "slowest_step_ms": round(max(step_ms), 1), "steps_over_1s": sum(t > 1e3 for t in step_ms),
        "num_blocks": blocks, "first_outputs": [gen.output(i)[:8] for i in ids[:2]],
    }  # fmt: skip
    print(json.dumps({"fusegraph_timing": out}), flush=True)  # before anything else can fail
    if args.check_graphs:
        out["check_graphs"] = _guarded(check_graphs, compiled, manager, args.prompt_len + args.output_len)
    return out


def run_transformers(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """transformers' fp16 `generate` with a static cache on one batch of `args.hf_batch`."""
    import transformers

    hf_cfg = transformers.LlamaConfig(
        **{k: v for k, v in cfg.items() if k not in ("model_type", "torch_dtype")}
    )
    torch.set_default_dtype(torch.float16)
    with torch.device(args.device):
        model = transformers.LlamaForCausalLM(hf_cfg).eval()  # type: ignore[no-untyped-call]
    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg["vocab_size"], (args.hf_batch, args.prompt_len), generator=g).to(args.device)
    kw = dict(do_sample=False, cache_implementation="static", pad_token_id=0, eos_token_id=None)
    if args.hf_no_compile:
        kw["disable_compile"] = True

    def timed(n: int) -> float:
        _sync(args.device)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        _sync(args.device)
        assert out.shape[1] == args.prompt_len + n
        return time.perf_counter() - t

    timed(2)  # warm-up (and compilation, where transformers compiles)
    first = timed(1)
    total = timed(args.output_len)
    produced = args.hf_batch * args.output_len
    return {
        "batch": args.hf_batch, "total_s": round(total, 3), "output_tokens_per_s": round(produced / total, 1),
        "tpot_ms": round(1e3 * (total - first) / (args.output_len - 1), 2), "prefill_s": round(first, 3),
        "compiled": not args.hf_no_compile,
    }  # fmt: skip


def check_graphs(compiled: Any, manager: Any, max_seq_len: int) -> dict[str, Any]:
    """Staggered requests on the benchmark's own model: decode steps replayed from CUDA graphs
    (buckets 1, 2, 4, 8: batches of 3 and 5 rows are padded) give the tokens eager steps give.
    Seeded sampling, since random weights make greedy tokens repeat."""
    from fusegraph.generate import Generator, SamplingParams

    prompts = [[(7 * i + 3 * j) % 500 for j in range(5 + 9 * i)] for i in range(5)]
    outputs, replays = [], []
    for buckets in ((1, 2, 4, 8), None):
        gen = Generator(compiled, manager, cuda_graph_batch_sizes=buckets, max_seq_len=max_seq_len)
        ids = []
        for i, p in enumerate(prompts):  # one joins every step: batches of 1..5 rows
            ids.append(gen.add_request(p, SamplingParams(max_new_tokens=12, temperature=1.0, seed=i)))
            gen.step()
        for _ in gen.stream():
            pass
        outputs.append([gen.output(i) for i in ids])
        replays.append(gen.stats.graph_replays)
    return {"graphs_equal_eager": outputs[0] == outputs[1], "graph_replays": replays[0], "tokens": outputs[0]}


def _p99(xs: list[float]) -> float:
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON object (and writes it to --out)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--tokens-per-step", type=int, default=8192, help="the Generator's token budget per step")
    p.add_argument(
        "--warmup",
        choices=("full", "quick"),
        default="full",
        help="untimed warm-up: the same workload once (full) or a few small batches (quick)",
    )
    p.add_argument("--hf-batch", type=int, default=32)
    p.add_argument("--hf-no-compile", action="store_true", help="transformers generate without torch.compile")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument(
        "--hf-if-before", type=float, default=None, help="run transformers only if fewer seconds were used"
    )
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--tiny", action="store_true", help="a 2-layer model of small dims (smoke test)")
    p.add_argument("--check-graphs", action="store_true", help="then check graph replays against eager steps")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    started = time.perf_counter()
    cfg = TINY if args.tiny else LLAMA3_8B
    result: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "out"}}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    result["fusegraph"] = _guarded(run_fusegraph, args, cfg)
    if "error" in result["fusegraph"] and not args.no_cuda_graphs:
        args.no_cuda_graphs = True  # a failure in the graph path: measure without it, and say so
        result["fusegraph_no_graphs"] = _guarded(run_fusegraph, args, cfg)
    _emit(result, args.out)
    used = time.perf_counter() - started
    if not args.skip_hf and args.hf_if_before is not None and used > args.hf_if_before:
        result["transformers"] = {
            "skipped": f"{used:.0f} s used, past --hf-if-before {args.hf_if_before:.0f} s"
        }
    elif not args.skip_hf:
        result["transformers"] = _guarded(run_transformers, args, cfg)
        fg, hf = result.get("fusegraph_no_graphs", result["fusegraph"]), result["transformers"]
        if "output_tokens_per_s" in fg and "output_tokens_per_s" in hf:
            result["speedup"] = round(fg["output_tokens_per_s"] / hf["output_tokens_per_s"], 2)
    _emit(result, args.out)
    return 0 if all("error" not in v for v in result.values() if isinstance(v, dict)) else 1


def _guarded(fn: Any, *args: Any) -> dict[str, Any]:
    """Run one phase; a failure is recorded (with its traceback's tail) instead of raised."""
    import traceback

    try:
        return dict(fn(*args))
    except Exception as err:  # noqa: BLE001 - a benchmark phase reports its failure and the run goes on
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    finally:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the phase's model and cache are gone
        except Exception:  # noqa: BLE001, S110 - a poisoned CUDA context: the error above says why
            pass


def _emit(result: dict[str, Any], out: Path | None) -> None:
    print(json.dumps(result), flush=True)
    if out is not None:
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
