"""The mutation fuzzer's driver: mutants of real graphs, parsed in a pool of subprocesses.

A mutant fails when any stage raises something other than the project's diagnostics
(IRParseError, IRVerifyError, PassVerifyError), when its parse takes longer than `slow_s`,
or when its worker does not answer within `kill_s` (the worker is killed and replaced).

    $ python -m tests.fuzz.run --count 3000            # what `make fuzz` runs
    $ python -m tests.fuzz.run --count 300 --seed 7 --save /tmp/mutants
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import random
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.fuzz.mutate import mutate
from tests.fuzz.seeds import seed_texts

_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Failure:
    """One failing mutant: why, where, and the mutant itself."""

    kind: str  # "raw", "slow" or "timeout"
    seed_name: str
    detail: str
    data: bytes


@dataclass
class Report:
    """What a fuzz run found."""

    seed: int
    count: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[Failure] = field(default_factory=list)
    slowest_parse_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> str:
        kinds = collections.Counter(f.kind for f in self.failures)
        lines = [
            f"fuzz seed {self.seed}: {self.count} mutants in {self.wall_s:.1f} s: "
            f"{self.outcomes['ok']} parsed and passed, {self.outcomes['diagnostic']} diagnostics, "
            f"{kinds['raw']} raw exceptions, {kinds['slow']} slow parses, {kinds['timeout']} timeouts; "
            f"slowest parse {self.slowest_parse_s:.3f} CPU s; {len(self.messages)} distinct diagnostics",
        ]
        lines += [f"  {f.kind} [{f.seed_name}] {f.detail}" for f in self.failures[:20]]
        return "\n".join(lines)


class _Worker:
    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's stderr, shown if it dies; closed in kill()
        env = {**os.environ, "PYTHONPATH": str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=_ROOT,
            env=env,
            text=True,
        )
        self.job: tuple[int, str, bytes] | None = None
        self.sent_at = 0.0
        self.started_at = time.monotonic()
        self.ready = False

    @property
    def stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def send(self, job: tuple[int, str, bytes]) -> None:
        assert self.proc.stdin is not None
        self.job, self.sent_at = job, time.monotonic()
        self.proc.stdin.write(json.dumps({"id": job[0], "data": base64.b64encode(job[2]).decode()}) + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def run_fuzz(
    count: int, seed: int, workers: int = 2, slow_s: float = 2.0, kill_s: float = 10.0, start_s: float = 120.0
) -> Report:
    """Fuzz `count` mutants (deterministic for a `seed`) over `workers` subprocesses."""
    rng = random.Random(seed)
    seeds = list(seed_texts().items())
    jobs: collections.deque[tuple[int, str, bytes]] = collections.deque()
    for i in range(count):
        name, text = rng.choice(seeds)
        jobs.append((i, name, mutate(text, rng)))
    report, begin = Report(seed=seed), time.monotonic()
    pool = [_Worker() for _ in range(workers)]
    sel = selectors.DefaultSelector()
    for w in pool:
        sel.register(w.stdout, selectors.EVENT_READ, w)
    try:
        while jobs or any(w.job is not None for w in pool):
            for w in pool:
                if w.ready and w.job is None and jobs:
                    w.send(jobs.popleft())
            for key, _ in sel.select(timeout=0.2):
                w = key.data
                line = w.stdout.readline()
                if not line:
                    raise RuntimeError(f"a fuzz worker died (exit {w.proc.wait()}):\n{w.stderr_tail()}")
                answer = json.loads(line)
                if not w.ready:
                    w.ready = True
                    continue
                _record(report, w.job, answer, slow_s)
                w.job = None
            now = time.monotonic()
            for i, w in enumerate(pool):
                late = w.job is not None and now - w.sent_at > kill_s
                if not w.ready and now - w.started_at > start_s:
                    raise RuntimeError(f"a fuzz worker did not start within {start_s} s")
                if late:
                    assert w.job is not None
                    report.count += 1
                    report.failures.append(Failure("timeout", w.job[1], f"no answer in {kill_s} s", w.job[2]))
                    sel.unregister(w.stdout)
                    w.kill()
                    pool[i] = _Worker()
                    sel.register(pool[i].stdout, selectors.EVENT_READ, pool[i])
    finally:
        for w in pool:
            w.kill()
    report.wall_s = time.monotonic() - begin
    return report


def _record(report: Report, job: Any, answer: dict[str, Any], slow_s: float) -> None:
    _, seed_name, data = job
    report.count += 1
    report.outcomes[answer["outcome"]] += 1
    report.slowest_parse_s = max(report.slowest_parse_s, answer["seconds"])
    detail = f"{answer['stage']}: {answer['error']}: {answer['message']}"
    if answer["outcome"] == "diagnostic":
        report.messages[answer["error"] + ": " + answer["message"].partition(": ")[2][:60]] += 1
    if answer["outcome"] == "raw":
        report.failures.append(Failure("raw", seed_name, detail, data))
    if answer["seconds"] > slow_s:
        report.failures.append(
            Failure("slow", seed_name, f"parse took {answer['seconds']:.2f} s; {detail}", data)
        )


def save_failures(report: Report, folder: Path) -> list[Path]:
    """Write each failing mutant to `folder/<kind>-<n>.mlir`; the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, f in enumerate(report.failures):
        path = folder / f"{f.kind}-{n}.mlir"
        path.write_bytes(f.data)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.fuzz.run`: fuzz, print the summary, exit 1 on any failure."""
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=3000, help="mutants to try (default 3000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--slow", type=float, default=2.0, help="a parse slower than this many seconds fails")
    p.add_argument("--save", type=Path, default=Path("fuzz-failures"), help="where failing mutants go")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    report = run_fuzz(args.count, seed, workers=args.workers, slow_s=args.slow)
    print(report.summary())
    if report.failures:
        paths = save_failures(report, args.save)
        print(f"saved {len(paths)} failing mutants under {args.save}/")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
