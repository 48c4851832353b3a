"""Tensor parallelism on two GPUs: TP=2 vs TP=1 logits, and the decode step time.

Usage (a machine with two GPUs; NCCL's NVLink multicast is turned off here):
    python benchmarks/gpu_tp.py [--check-layers 4] [--layers 32] [--batch 1 32] [--ctx 2048]
    python benchmarks/gpu_tp.py --tiny      # a dry run of every code path on the CPU (gloo)

Two ranks are started with `fusegraph.distributed.launch` (NCCL, one GPU each). Each rank:

1. **Check**: builds the full `--check-layers`-layer Llama-3-8B-shaped GPTQ model (4-bit,
   g128, sym; `--act-order both` (default): once without and once with act order, random
   orders whose groups the row shards duplicate) from one seeded random state, runs it
   whole on its own GPU (TP=1), then runs its shard of the same state
   (`build_model_shard` + `shard_state`, collectives over NCCL) on the same ragged prefill
   (3 sequences) and 2 decode steps, and reports the largest logit difference, its ratio to
   the logits' scale, and whether the argmax tokens agree.
2. **Timing**: the `--layers`-layer model with random weights (stacked q/k/v and gate/up,
   fp16, page 128, the default pipeline), compiled with CUDA graphs (the NCCL all-reduces
   captured; on a capture failure it says so and times eager). One decode step at each batch
   size, every sequence holding `--ctx` cached tokens: TP=2 on both GPUs, then TP=1 on GPU 0
   alone. It prints ms/step, the TP=2 speedup and tokens/s per GPU (targets: >= 1.6x at bs 32,
   >= 1.3x at bs 1; per-GPU throughput within 1.3x of TP=1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_model  # noqa: E402
from frontend import LLAMA3_8B  # noqa: E402

from fusegraph.compiler import DeviceRef, DType  # noqa: E402
from fusegraph.distributed import RankInfo, launch  # noqa: E402
from fusegraph.distributed.model import act_order_plan, build_model_shard, model_layout  # noqa: E402
from fusegraph.distributed.shards import DictSource, shard_state  # noqa: E402
from fusegraph.nn import DEFAULT_PIPELINE, ModelConfig  # noqa: E402
from fusegraph.nn.quant import QuantizationConfig  # noqa: E402
from fusegraph.nn.sharding import ShardingStrategy  # noqa: E402
from fusegraph.ops.gptq_packing import act_order_g_idx  # noqa: E402

PAGE = 128
TINY = replace(
    LLAMA3_8B, vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64, sliding_windows=(None, None),
)  # fmt: skip


def shape(base: ModelConfig, layers: int, act_order: bool, dtype: DType) -> ModelConfig:
    """`base` with `layers` layers, the activation dtype, and (optionally) act order."""
    quant = base.quantization
    if act_order and quant is not None:
        quant = QuantizationConfig(bits=quant.bits, group_size=quant.group_size, desc_act=True, sym=quant.sym)
    return replace(
        base, num_hidden_layers=layers, sliding_windows=(None,) * layers, dtype=dtype, quantization=quant
    )


def seeded_state(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full random checkpoint (HF names, unstacked) on the CPU, the same on every rank.

    GPTQ words are random bits; scales keep each output's variance near 1/K. With act order,
    q/k/v (and gate/up) share one random order and o_proj/down_proj get their own, so the row
    split leaves most groups on both ranks (each shard duplicates them)."""
    from fusegraph.nn import DecoderModel

    gen = torch.Generator().manual_seed(seed)
    model = DecoderModel(config)  # CPU, only for the parameter specs
    cfg = config.quantization
    state: dict[str, torch.Tensor] = {}
    perms: dict[str, torch.Tensor] = {}
    for name, spec in model.named_params():
        shp, dtype = spec.shape, spec.dtype.to_torch()
        if name.endswith("g_idx"):
            k, proj = shp[0], name.rsplit(".", 2)[-2]
            key = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "gate_proj": "mlp", "up_proj": "mlp"}
            group = f"{name.rsplit('.', 3)[0]}.{key.get(proj, proj)}"
            perm = perms.setdefault(group, torch.randperm(k, generator=gen))
            assert cfg is not None
            state[name] = act_order_g_idx(perm, cfg.group_size)
        elif dtype == torch.int32:
            state[name] = torch.randint(-(2**31), 2**31 - 1, shp, dtype=torch.int32, generator=gen)
        elif name.endswith("scales"):
            k = shp[0] * (cfg.group_size if cfg is not None else 1)
            state[name] = (torch.rand(shp, generator=gen) * 0.5 + 0.75).div(4.6 * k**0.5).to(dtype)
        elif "norm" in name:
            state[name] = (1 + 0.1 * torch.randn(shp, generator=gen)).to(dtype)
        else:
            state[name] = (torch.randn(shp, generator=gen) * 0.02).to(dtype)
    return state


def _device(info: RankInfo) -> tuple[str, DeviceRef]:
    if info.device.startswith("cuda"):
        index = int(info.device.partition(":")[2] or 0)
        return info.device, DeviceRef.GPU(index)
    return "cpu", DeviceRef.CPU()


def _run_steps(model: Any, steps: list[list[int]], vocab: int, dev: str) -> list[torch.Tensor]:
    run, manager = model.compile(64, device=dev), model.kv_manager(64)
    gen = torch.Generator().manual_seed(1)
    seqs = [manager.claim(max_len=512) for _ in steps[0]]
    out = []
    for lengths in steps:
        batch = manager.prepare(seqs, lengths)
        tokens = torch.randint(0, vocab, (sum(lengths),), generator=gen).to(dev)
        (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, lengths)
        out.append(logits.float().cpu())
    return out


def check(info: RankInfo, config: ModelConfig) -> dict[str, Any]:
    """TP=1 and TP=2 logits of one seeded model on this rank's device."""
    from fusegraph.nn import DecoderModel

    dev, ref = _device(info)
    full = seeded_state(config)
    steps = [[37, 5, 130], [1, 1, 1], [1, 1, 1]]
    one = DecoderModel(config, device=ref, page_size=PAGE)
    one.load_state_dict(full)
    tp1 = _run_steps(one, steps, config.vocab_size, dev)
    del one
    strategy = ShardingStrategy.tensor_parallel(info.world_size)
    layout = model_layout(config, strategy)
    source = DictSource(full)
    plan = act_order_plan(source, config, layout, info.rank)
    two = build_model_shard(config, strategy, info.rank, device=ref, page_size=PAGE, act_order=plan)
    names = [n for n, _ in two.named_params()]
    two.load_state_dict(
        shard_state(source, layout, info.rank, config.quantization, names, decisions=plan.decisions)
    )
    tp2 = _run_steps(two, steps, config.vocab_size, dev)
    diff = max(float((a - b).abs().max()) for a, b in zip(tp1, tp2, strict=True))
    scale = max(float(a.abs().max()) for a in tp1)
    agree = all(bool((a.argmax(-1) == b.argmax(-1)).all()) for a, b in zip(tp1, tp2, strict=True))
    return {
        "max_abs_diff": diff,
        "logit_scale": scale,
        "argmax_agree": agree,
        "cache_heads": two.kv_params.n_kv_heads,
    }


def _decode_ms(model: Any, batches: list[int], ctx: int, dev: str, vocab: int) -> dict[int, Any]:
    """ms/step of one decode step at each batch size (CUDA graphs when they capture)."""
    import torch.distributed as dist

    pages = -(-(ctx + 1) // PAGE)
    num_blocks = max(batches) * pages
    graphs = dev.startswith("cuda")
    run = model.compile(num_blocks, device=dev, pipeline=DEFAULT_PIPELINE, cuda_graphs=graphs)
    out: dict[Any, Any] = {"cuda_graphs": graphs}
    for bs in batches:
        manager = model.kv_manager(num_blocks)
        manager.kv_blocks.normal_(0, 1)
        seqs = [manager.claim(max_len=ctx + 1) for _ in range(bs)]
        manager.prepare(seqs, [ctx] * bs)
        manager.commit(seqs, [ctx] * bs)  # as if ctx tokens had been prefilled (random KV)
        batch = manager.prepare(seqs, [1] * bs)
        tokens = torch.randint(0, vocab, (bs,), device=dev)
        inputs = (tokens, batch.row_offsets, *batch.kv_inputs)
        try:
            run(*inputs)  # warm-up, then the capture
            (logits,) = run(*inputs)
        except Exception as err:  # noqa: BLE001 - reported, then timed without CUDA graphs
            if not out["cuda_graphs"]:
                raise
            print(
                f"bs {bs}: CUDA-graph capture failed ({type(err).__name__}: {err}); timing eager", flush=True
            )
            out["cuda_graphs"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
            run = model.compile(num_blocks, device=dev, pipeline=DEFAULT_PIPELINE)
            run(*inputs)
            (logits,) = run(*inputs)
        if not bool(torch.isfinite(logits).all()):
            raise RuntimeError(f"bs {bs}: non-finite logits")
        if dist.is_initialized() and getattr(model, "tp_reduce", None) is not None:
            dist.barrier()
        out[bs] = gpu_model.time_steps(lambda inputs=inputs, run=run: run(*inputs))
        del manager
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def timing(info: RankInfo, config: ModelConfig, batches: list[int], ctx: int) -> dict[str, Any]:
    """TP=2 decode step times on every rank, then TP=1 on rank 0 alone."""
    import torch.distributed as dist

    dev, ref = _device(info)
    gpu_model.DEV = "cuda" if dev.startswith("cuda") else "cpu"
    flags: dict[str, Any] = {
        "stacked_qkv": True,
        "stacked_gate_up": True,
        "max_seq_len": ctx + 64,
        "page_size": PAGE,
    }
    strategy = ShardingStrategy.tensor_parallel(info.world_size)
    two = build_model_shard(config, strategy, info.rank, device=ref, **flags)
    two.load_state_dict(gpu_model.random_state(two))
    result: dict[str, Any] = {"tp2": _decode_ms(two, batches, ctx, dev, config.vocab_size)}
    del two
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    dist.barrier()
    if info.rank == 0:
        one = build_model_shard(config, ShardingStrategy.tensor_parallel(1), 0, device=ref, **flags)
        one.load_state_dict(gpu_model.random_state(one))
        result["tp1"] = _decode_ms(one, batches, ctx, dev, config.vocab_size)
    dist.barrier()
    return result


def rank_main(info: RankInfo, args: argparse.Namespace) -> dict[str, Any]:
    """Everything one rank does; returns its measurements."""
    start = time.perf_counter()
    base = TINY if args.tiny else LLAMA3_8B
    dtype = DType.float16 if info.device.startswith("cuda") else DType.float32
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if info.device.startswith("cuda") else "cpu"
    }
    if not args.skip_check:
        variants = {"off": [False], "on": [True], "both": [False, True]}[args.act_order]
        out["check"] = {}
        for act_order in variants:
            res = check(info, shape(base, args.check_layers, act_order, dtype))
            out["check"]["desc_act" if act_order else "g128"] = res
            print(
                f"rank {info.rank} check act_order={act_order}: {res} ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    if not args.skip_timing:
        out["timing"] = timing(info, shape(base, args.layers, False, dtype), args.batch, args.ctx)
        print(f"rank {info.rank} timing done ({time.perf_counter() - start:.0f}s)", flush=True)
    return out


def main() -> None:
    """Launch two ranks and print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check-layers", type=int, default=4)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument(
        "--act-order", choices=("off", "on", "both"), default="both", help="desc_act in the check model(s)"
    )
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--tiny", action="store_true", help="small dims on the CPU with gloo (a dry run)")
    args = p.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast (see the device notes)
    cuda = not args.tiny and torch.cuda.device_count() >= 2
    if not args.tiny and not cuda:
        sys.exit(f"gpu_tp.py: needs 2 GPUs, found {torch.cuda.device_count()}; use --tiny for a CPU dry run")
    if args.tiny:
        args.layers, args.check_layers, args.ctx = (
            min(args.layers, 2),
            min(args.check_layers, 2),
            min(args.ctx, 64),
        )
    print(f"torch {torch.__version__}, {'2 GPUs, nccl' if cuda else 'cpu, gloo'}", flush=True)
    results = launch(
        rank_main, 2, args, backend="nccl" if cuda else "gloo",
        devices=["cuda:0", "cuda:1"] if cuda else None, timeout_s=3000,
    )  # fmt: skip
    print(f"\ndevice: {results[0]['device']}")
    for rank, res in enumerate(results):
        for variant, c in res.get("check", {}).items():
            print(
                f"check rank {rank} ({variant}): TP=2 vs TP=1 max |diff| {c['max_abs_diff']:.3g} (logit scale "
                f"{c['logit_scale']:.3g}), argmax agree: {c['argmax_agree']}, cache kv heads {c['cache_heads']}"
            )
    if "timing" not in results[0]:
        return
    tp1, tp2 = results[0]["timing"]["tp1"], results[0]["timing"]["tp2"]
    print(
        f"\ndecode step, {args.layers} layers, ctx {args.ctx}, cuda graphs tp1={tp1['cuda_graphs']} tp2={tp2['cuda_graphs']}"
    )
    print(
        f"{'bs':>4} {'TP=1 ms':>9} {'TP=2 ms':>9} {'speedup':>8} {'TP=1 tok/s/GPU':>15} {'TP=2 tok/s/GPU':>15}"
    )
    for bs in args.batch:
        a, b = tp1[bs], tp2[bs]
        print(f"{bs:>4} {a:9.3f} {b:9.3f} {a / b:8.2f} {bs * 1e3 / a:15.0f} {bs * 1e3 / b / 2:15.0f}")


if __name__ == "__main__":
    main()
