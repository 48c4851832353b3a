"""`fusegraph model MODEL_DIR`: build a whole model's graph from a HF directory; print, lower or run it.

Example:
    $ fusegraph model ./qwen3-gptq --print-ir
    $ fusegraph model ./qwen3-gptq --lower linalg-on-tensors --mode decomposed -o model.mlir
    $ fusegraph model ./qwen3-gptq --logits --token-ids "1,2,3;4,5" --device cpu --json
    {"logits": [[...], [...]]}

`--logits` runs one ragged prefill of the `;`-separated prompts (ids used as given: no BOS
is added) and prints each prompt's last-token logits, in float32. The model runs in the
checkpoint's dtype unless `--dtype` is given. The `--json` form, `{"logits": [[...], ...]}`
(one row of `vocab_size` floats per prompt, in prompt order), is a stable contract.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fusegraph.nn.decoder import DecoderModel

_OUTPUT_TYPES = ("torch", "linalg-on-tensors", "tosa", "stablehlo")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the `model` subcommand to the `fusegraph` CLI."""
    p = subparsers.add_parser(
        "model", help="build a HF model directory's graph; print, lower or run it", description=__doc__
    )
    p.add_argument("model_dir", help="a HF model directory (config.json + safetensors), dense or GPTQ")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--print-ir", action="store_true", help="print the graph's IR (after the passes)")
    what.add_argument(
        "--lower",
        nargs="?",
        const="torch",
        choices=_OUTPUT_TYPES,
        help="lower to torch-mlir (default: torch)",
    )
    what.add_argument("--logits", action="store_true", help="print the last-token logits of --token-ids")
    p.add_argument("--token-ids", help='prompts: comma-separated ids, prompts separated by ";" ("1,2,3;4,5")')
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--backend", choices=("eager", "iree"), default="eager")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help='print {"logits": [[...], ...]}')
    p.add_argument(
        "--unfused", action="store_true", help="separate projections and the unfused rope/store form"
    )
    p.add_argument(
        "-p",
        "--passes",
        default=None,
        help="pass pipeline text (default: fusegraph.compile's default pipeline for --backend/--device; '' for none)",
    )
    p.add_argument("--mode", choices=("custom", "decomposed"), default="custom", help="--lower: the op form")
    p.add_argument("-o", "--output", default="-", help="--print-ir/--lower: output file ('-' = stdout)")
    p.add_argument(
        "--num-blocks", type=int, default=None, help="KV-cache pages (default: what the prompts need)"
    )
    p.add_argument("--page-size", type=int, default=16, help="tokens per KV-cache page")
    p.add_argument(
        "--max-seq-len", type=int, default=None, help="rope table rows (default: max_position_embeddings)"
    )
    p.add_argument("--tp", type=int, default=1, metavar="N", help="tensor parallelism over N processes")
    p.set_defaults(func=model_cli)
    return p


def model_cli(args: argparse.Namespace) -> int:
    """Run the subcommand; errors print one line and a reproducer, and return 1."""
    try:
        if getattr(args, "tp", 1) != 1:
            from fusegraph.distributed.cli import run_tp

            return run_tp(_run, args)
        return _run(args)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"fusegraph model: error: {err}", file=sys.stderr)
        print(f"reproduce with: {shlex.join(['fusegraph', 'model', *sys.argv[2:]])}", file=sys.stderr)
        return 1


def parse_token_ids(text: str | None) -> list[list[int]]:
    """`"1,2,3;4,5"` -> `[[1, 2, 3], [4, 5]]`.

    Raises:
        ValueError: Missing, empty prompts, or an id that is not a non-negative integer.
    """
    if not text:
        raise ValueError('--logits needs --token-ids, e.g. --token-ids "1,2,3;4,5"')
    prompts = []
    for i, part in enumerate(text.split(";")):
        try:
            ids = [int(t) for t in part.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"--token-ids: prompt {i} ({part!r}) must be comma-separated integers") from None
        if not ids or min(ids) < 0:
            raise ValueError(f"--token-ids: prompt {i} ({part!r}) must hold at least one id, all >= 0")
        prompts.append(ids)
    return prompts


def _run(args: argparse.Namespace) -> int:
    from fusegraph.distributed.cli import load_for_rank as load_model  # nn.load_model unless --tp

    prompts = parse_token_ids(args.token_ids) if args.logits else [[0]]
    model = load_model(
        args.model_dir,
        device=args.device,
        dtype=args.dtype,
        fuse=not args.unfused,
        max_seq_len=args.max_seq_len,
        page_size=args.page_size,
    )
    pages = sum(-(-len(p) // args.page_size) for p in prompts)
    num_blocks = args.num_blocks or max(pages, 1)
    pipeline = "default" if args.passes is None else args.passes
    vocab = model.config.vocab_size
    if (bad := [t for p in prompts for t in p if t >= vocab]) and args.logits:
        raise ValueError(f"--token-ids: id {bad[0]} is out of range for vocab_size {vocab}")
    if args.logits:
        logits = _logits(model, prompts, num_blocks, pipeline, args)
        if args.json:
            print(json.dumps({"logits": logits.tolist()}))
        else:
            for i, (prompt, row) in enumerate(zip(prompts, logits)):
                top = row.topk(min(5, vocab))
                pairs = ", ".join(f"{int(t)}: {float(v):.4f}" for v, t in zip(top.values, top.indices))
                print(f"prompt {i} ({len(prompt)} tokens): top logits {{{pairs}}}")
        return 0
    graph = model.build_graph(num_blocks)
    if pipeline:
        from fusegraph.passes import PassManager
        from fusegraph.runtime.pipeline import resolve_pipeline

        if text := resolve_pipeline(pipeline, args.backend, args.device):
            PassManager(text).run(graph)
    if args.print_ir:
        text = str(graph)
    else:
        from fusegraph.compiler.lowering import to_torch_mlir

        text = str(to_torch_mlir(graph, mode=args.mode, output_type=args.lower))
    _write(args.output, text)
    return 0


def _logits(
    model: DecoderModel, prompts: list[list[int]], num_blocks: int, pipeline: str, args: argparse.Namespace
) -> torch.Tensor:
    import torch

    run = model.compile(num_blocks, backend=args.backend, device=args.device, pipeline=pipeline or None)
    manager = model.kv_manager(num_blocks)
    seqs = [manager.claim(max_len=len(p)) for p in prompts]
    batch = manager.prepare(seqs, [len(p) for p in prompts])
    tokens = torch.tensor([t for p in prompts for t in p], dtype=torch.int64, device=manager.kv_blocks.device)
    (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
    return logits.float().cpu()


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        with open(path, "w") as f:
            f.write(text)
