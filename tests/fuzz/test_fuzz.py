"""CI's share of the mutation fuzzer: a few hundred fresh mutants of real graphs, parsed in
two worker subprocesses. Any exception other than the project's diagnostics, any parse
slower than 2 s and any worker that stops answering fails the test. `make fuzz` runs more.

The seed is fresh each run (set FUSEGRAPH_FUZZ_SEED to repeat one); a failure names it and
saves the failing mutants under the test's tmp folder.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from tests.fuzz.mutate import MUTATIONS, mutate
from tests.fuzz.run import run_fuzz, save_failures
from tests.fuzz.worker import check

CI_MUTANTS = 300


def test_fuzz__mutants_of_real_graphs_give_only_diagnostics(tmp_path: Path) -> None:
    seed = int(os.environ.get("FUSEGRAPH_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
    report = run_fuzz(CI_MUTANTS, seed, workers=2, slow_s=2.0, kill_s=10.0)
    saved = save_failures(report, tmp_path) if report.failures else []
    assert not report.failures, f"{report.summary()}\nmutants saved: {saved}"
    assert report.count == CI_MUTANTS
    assert report.outcomes["diagnostic"] > CI_MUTANTS // 2  # the mutations do break the text


def test_worker__tells_a_raw_exception_from_a_diagnostic(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "m.mlir")
    assert check(b"builtin.module {", path)["outcome"] == "diagnostic"
    import tests.fuzz.worker as worker

    def broken(text: str, filename: str) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(worker, "parse", broken)
    answer = check(b"builtin.module {}", path)
    assert (answer["outcome"], answer["error"], answer["stage"]) == ("raw", "KeyError", "parse")


def test_mutations__each_changes_real_ir_and_is_deterministic() -> None:
    from tests.fuzz.seeds import seed_texts

    text = seed_texts()["unfused_layer"]
    for mutation in MUTATIONS:
        changed = [mutation(text, random.Random(i)) != text for i in range(5)]
        assert any(changed), mutation.__name__
    assert mutate(text, random.Random(5)) == mutate(text, random.Random(5))
    assert re.search(r"%[0-9]+ = fg\.\S+ %([0-9]+)", text)  # the SSA mutations have targets
