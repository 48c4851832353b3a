"""`--tp N` for the `fusegraph model` and `fusegraph generate` commands.

A command's whole body runs on every rank (`run_tp(body, args)` launches N processes: gloo
on the CPU, NCCL on CUDA with one GPU per rank). Inside it, `load_for_rank(...)` returns
the rank's shard (`load_model_shard`) instead of the whole model, so the same body builds,
compiles and runs each rank's graph. Every rank computes the same logits and tokens; only
rank 0 writes to stdout and stderr, so the output (and its `--json` form) is the one of
TP=1.

Example:
    $ fusegraph model ./llama-gptq --tp 2 --logits --token-ids "1,2,3" --json
    $ fusegraph generate ./llama-gptq --tp 2 --token-ids "1,2,3" --json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusegraph.distributed.groups import RankInfo, current_rank
from fusegraph.distributed.launch import LaunchError, launch

if TYPE_CHECKING:
    from fusegraph.nn.decoder import DecoderModel


def run_tp(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run `body(args)` on `args.tp` ranks; return the largest exit status.

    Raises:
        ValueError: `--tp` is not a positive int, or more GPUs are asked for than exist.
        Exception: The first failing rank's own exception (a ValueError from a model that
            does not split, ...), re-raised here; a `LaunchError` when it cannot be.
    """
    n = args.tp
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--tp must be a positive int, got {n!r}")
    cuda = str(args.device).startswith("cuda")
    if cuda:
        import torch

        if torch.cuda.device_count() < n:
            raise ValueError(f"--tp {n} needs {n} GPUs, but {torch.cuda.device_count()} are visible")
    try:
        codes = launch(
            _rank_main,
            n,
            body,
            args,
            backend="nccl" if cuda else "gloo",
            start_method="spawn" if cuda else "fork",
        )
    except LaunchError as err:
        if err.error is not None and isinstance(err.error, Exception):
            raise err.error from None
        raise
    return max(int(c) for c in codes)


def _rank_main(info: RankInfo, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    args = copy.copy(args)
    args.device = info.device
    if info.rank != 0:  # every rank computes the same result; rank 0 reports it
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the rank
        sys.stdout = sys.stderr = devnull
    return body(args)


def load_for_rank(path: str | Path, **kwargs: Any) -> DecoderModel:
    """`load_model(path, **kwargs)`, or this rank's shard inside a tensor-parallel run.

    Example:
        >>> model = load_for_rank(args.model_dir, device=args.device, dtype=args.dtype)
    """
    info = current_rank()
    if info is None or info.world_size == 1:
        from fusegraph.nn.hf_loader import load_model

        return load_model(path, **kwargs)
    from fusegraph.distributed.model import load_model_shard

    return load_model_shard(path, rank=info.rank, world_size=info.world_size, **kwargs)
