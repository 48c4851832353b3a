"""`benchmarks/gpu_gptq_wgmma.py`'s side-by-side plan comparison, on the CPU: WGMMA_OLD_PLAN's `rswg_plan` becomes the
variant "ws/old", and merged onto the current plan (as its row's call merges a variant) it is that old plan exactly;
WGMMA_SHAPES keeps the shapes it names."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _bench(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import gpu_gptq_wgmma

    return importlib.reload(gpu_gptq_wgmma)  # its settings are read at import


def test_gpu_gptq_wgmma__an_old_plan_file_is_timed_as_ws_old(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma import with_config
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_plan import rswg_plan

    old_file = tmp_path / "old_plan.py"
    old_file.write_text(
        "def rswg_plan(m, n, k, sms, bits=4):\n"
        "    return {'split_k': 1, 'tok': 128, 'stages': 4, 'ncw': 2, 'minb': 1, 'tma': 1, 'sk': 0, 'vred': 0,"
        " 'pdl': 0, 'ostage': 1}\n"
    )
    bench = _bench(monkeypatch, WGMMA_OLD_PLAN=str(old_file), WGMMA_ONLY="old$", WGMMA_SHAPES="qkv,down")
    variants = bench.ws_variants(768, 4096, 6144, 132, 8)
    assert [name for name, _ in variants] == ["ws/s2", "ws/old"]  # the plan, then the old plan only
    current = rswg_plan(768, 6144, 4096, 132, 8)
    assert current is not None and current["tok"] == 192
    assert with_config(current, variants[1][1]) == {"split_k": 1, "tok": 128, "stages": 4, "ncw": 2, "minb": 1,
                                                    "tma": 1, "sk": 0, "vred": 0, "pdl": 0, "ostage": 1}  # fmt: skip
    assert [label for label, _, _ in bench.SHAPES] == ["qkv", "down"]

    monkeypatch.delenv("WGMMA_OLD_PLAN")
    monkeypatch.delenv("WGMMA_SHAPES")
    plain = _bench(monkeypatch)
    assert all(name != "ws/old" for name, _ in plain.ws_variants(768, 4096, 6144, 132, 8))
    assert len(plain.SHAPES) == 4
