"""`fusegraph generate MODEL_DIR`: generate text (or token ids) with continuous batching.

    fusegraph generate tiny-llama/ --prompt "Once upon a time" --max-new-tokens 32
    fusegraph generate tiny-llama/ --token-ids "1,2,3;4,5" --json
        {"token_ids": [[...], [...]]}                      # the new tokens of each prompt

One `--prompt` streams its text as it comes; several prompts (or `--token-ids`) print each
result at the end. The speed (output tokens/s) goes to stderr, and so does a spinner while
the model loads and compiles. `--json` prints only the JSON object on stdout (a stable
contract: `{"token_ids": [[int, ...], ...]}`, one list per prompt, in order).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def add_parser(sub: Any) -> None:
    """Add the `generate` subcommand."""
    p = sub.add_parser("generate", help="generate text from a model directory", description=__doc__)
    p.add_argument("model_dir", help="a Hugging Face model directory (dense or GPTQ)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--prompt", action="append", help="a text prompt (repeat for several); needs tokenizer.json"
    )
    src.add_argument("--token-ids", help='prompts as token ids: "1,2,3;4,5" (";" between prompts)')
    p.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens to generate per prompt (default 32)"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (prompt i uses seed + i)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the model's eos tokens")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: the checkpoint's)")
    p.add_argument("--num-blocks", type=int, default=None, help="KV cache pages (default: enough for all)")
    p.add_argument("--page-size", type=int, default=16, help="tokens per KV cache page (default 16)")
    p.add_argument("--max-batch-size", type=int, default=256, help="most requests per step (default 256)")
    p.add_argument(
        "--max-tokens-per-step", type=int, default=2048, help="token budget of a step (default 2048)"
    )
    p.add_argument("--no-prefix-caching", action="store_true", help="do not share cached prompt prefixes")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps without CUDA graphs")
    p.add_argument("--json", action="store_true", help='print {"token_ids": [[...], ...]} only')
    p.add_argument("--tp", type=int, default=1, metavar="N", help="tensor parallelism over N processes")
    p.set_defaults(func=run)


def _parse_token_ids(text: str) -> list[list[int]]:
    prompts = []
    for i, part in enumerate(text.split(";")):
        try:
            ids = [int(t) for t in part.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"--token-ids: prompt {i} ({part!r}) is not comma-separated ints") from None
        if not ids:
            raise ValueError(f"--token-ids: prompt {i} is empty in {text!r}")
        prompts.append(ids)
    return prompts


@contextmanager
def spinner(message: str, enabled: bool) -> Iterator[None]:
    """A spinner on stderr while the block runs (one plain line when stderr is not a terminal)."""
    if not enabled:
        yield
        return
    if not sys.stderr.isatty():
        print(f"{message} ...", file=sys.stderr, flush=True)
        yield
        return
    done = threading.Event()

    def spin() -> None:
        for c in itertools.cycle("|/-\\"):
            if done.wait(0.1):
                return
            print(f"\r{c} {message}", end="", file=sys.stderr, flush=True)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print(f"\r{' ' * (len(message) + 2)}\r", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Load, compile and generate; returns the exit status."""
    try:
        if getattr(args, "tp", 1) != 1:
            from fusegraph.distributed.cli import run_tp

            return run_tp(_run, args)
        return _run(args)
    except (ValueError, OSError) as err:
        print(f"fusegraph generate: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from fusegraph.distributed.cli import load_for_rank as load_model  # nn.load_model unless --tp
    from fusegraph.generate import Generator, SamplingParams
    from fusegraph.generate.text import TextStream, load_tokenizer, stop_token_ids
    from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

    tokenizer = load_tokenizer(args.model_dir)
    if args.prompt is not None:
        if tokenizer is None:
            raise ValueError(
                f"{args.model_dir}: no tokenizer.json, so --prompt cannot be encoded; use --token-ids"
            )
        prompts = [tokenizer.encode(p).ids for p in args.prompt]
    else:
        prompts = _parse_token_ids(args.token_ids)
    stops = () if args.ignore_eos else stop_token_ids(args.model_dir)
    params = [
        SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=None if args.seed is None else args.seed + i,
            stop_token_ids=stops,
        )
        for i in range(len(prompts))
    ]
    page = args.page_size
    blocks = args.num_blocks or 1 + sum(-(-(len(p) + args.max_new_tokens) // page) for p in prompts)
    with spinner(f"loading and compiling {args.model_dir}", enabled=not args.json):
        model = load_model(args.model_dir, device=args.device, dtype=args.dtype, page_size=page)
        compiled = model.compile(blocks, device=args.device)
    manager = PagedKVCacheManager(model.kv_params, blocks, prefix_caching=not args.no_prefix_caching)
    gen = Generator(
        compiled,
        manager,
        max_batch_size=args.max_batch_size,
        max_tokens_per_step=args.max_tokens_per_step,
        max_seq_len=min(model.rope.max_seq_len, blocks * page),
        cuda_graph_batch_sizes=None if args.no_cuda_graphs else (1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    ids = [gen.add_request(p, q) for p, q in zip(prompts, params)]
    streaming = len(prompts) == 1 and tokenizer is not None and not args.json
    text = TextStream(tokenizer) if streaming else None
    start, produced = time.perf_counter(), 0
    for event in gen.stream():
        produced += 1
        if text is not None:
            print(text.push(event.token), end="", flush=True)
    elapsed = time.perf_counter() - start
    outputs = [gen.output(i) for i in ids]
    if args.json:
        print(json.dumps({"token_ids": outputs}))
    elif text is not None:
        print()
    else:
        for i, out in enumerate(outputs):
            shown = tokenizer.decode(out) if tokenizer is not None else ",".join(map(str, out))
            print(f"[{i}] {shown}")
    s = gen.stats
    print(
        f"{produced} tokens in {elapsed:.2f} s ({produced / max(elapsed, 1e-9):.1f} tokens/s); "
        f"{s.steps} steps, {s.preemptions} preemptions, {manager.prefix_hit_tokens} prefix-cached tokens",
        file=sys.stderr,
    )
    return 0
