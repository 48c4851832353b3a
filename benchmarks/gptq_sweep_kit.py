"""The shared state of the GPTQ variant sweeps (`gptq_sweep.py`, `gptq_sweep_mid.py`): the log and its lines, the
time budget (SWEEP_BUDGET_S), and one checked, graph-timed variant (`timed`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402, N812
from gpu import graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_tiled as T  # noqa: E402, N812

LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("SWEEP_BUDGET_S", "1e9"))


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


class K:
    tiled = staticmethod(T.gptq_tiled_matmul)


def timed(row: str, name: str, fn: Callable[..., Any], layers: list[Any], xs: list[torch.Tensor],
           tol: float = 5e-3) -> tuple[float, float] | None:  # fmt: skip
    """(µs, error) of one checked, graph-timed variant of a table row, or None (logged) past the budget or when it fails:
    one failing variant must not hide the row."""
    if time.time() - T0 > BUDGET_S:
        log(f"  {row} {name}: skipped (budget)")
        return None
    try:
        return GB.checked_time(name, fn, layers, xs, graph_us, tol)
    except Exception as e:  # noqa: BLE001
        log(f"  {row} {name}: FAILED {type(e).__name__}: {str(e)[:300]}")
        return None
