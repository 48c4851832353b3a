"""`fusegraph demo` runs end to end and its summary table passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_every_backend_and_dumps_every_stage(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    result = subprocess.run(
        [sys.executable, "-m", "fusegraph.cli", "demo", "--dump-dir", str(dump), "--no-color"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "fuse-rope-split-store: 1 fused, 0 skipped" in out
    assert "+ %22, %23 = fg.rope_split_store" in out
    for backend in ("eager", "iree"):
        for form in ("unfused", "fused"):
            assert any(line.split()[:2] == [backend, form] for line in out.splitlines()), (backend, form)
    assert "PASS: worst error" in out
    names = sorted(p.name for p in dump.iterdir())
    assert names == [
        "1-unfused.mlir",
        "2-fused.mlir",
        "3-fused-custom.torch.mlir",
        "3-fused-decomposed.torch.mlir",
        "3-unfused-decomposed.torch.mlir",
    ]
    assert "fg.rope_split_store" in (dump / "2-fused.mlir").read_text()
