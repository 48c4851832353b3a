"""`PassManager`: run a pipeline of passes over a Graph, with verification, IR dumps,
per-pass timing and statistics.

Example:
    >>> stats = PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(g)
    >>> print(stats)
    pass statistics (total 4.12 ms)
        2.31 ms  fuse-rope-split-store: 32 fused, 0 skipped
        ...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TextIO

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError, VerifyException

from fusegraph.compiler.errors import IRVerifyError
from fusegraph.compiler.graph import Graph
from fusegraph.dialect import make_context
from fusegraph.passes.patterns import PassReport, reporting
from fusegraph.passes.registry import available_passes


class PassFailedError(RuntimeError):
    """A pass raised; the message names the pass."""


class PassVerifyError(IRVerifyError):
    """The IR failed to verify after a pass; the message names the pass."""


@dataclass
class PassRecord:
    """One pass run: its spec, wall time, counters and refusal reasons."""

    name: str
    spec: str
    seconds: float = 0.0
    report: PassReport | None = None
    changed: bool | None = None

    @property
    def counters(self) -> dict[str, int]:
        """The pass's statistics, e.g. `{"fused": 32, "skipped": 0}`."""
        return {} if self.report is None else dict(self.report.counters)

    @property
    def reasons(self) -> list[str]:
        """Why patterns refused candidates, one line each."""
        return [] if self.report is None else list(self.report.reasons)

    def __str__(self) -> str:
        stats = ", ".join(f"{n} {k}" for k, n in self.counters.items())
        return f"{self.name}: {stats}" if stats else self.name


@dataclass
class PassStatistics:
    """What a `PassManager.run` did, pass by pass. `str()` is the table users read."""

    records: list[PassRecord] = field(default_factory=list)

    def __getitem__(self, name: str) -> PassRecord:
        """The last run of the pass called `name`."""
        for record in reversed(self.records):
            if record.name == name:
                return record
        raise KeyError(f"no pass {name!r} in this run; ran {[r.name for r in self.records]}")

    @property
    def reasons(self) -> list[str]:
        """Every refusal reason of every pass, in order."""
        return [line for r in self.records for line in r.reasons]

    @property
    def total_seconds(self) -> float:
        """Wall time of all passes."""
        return sum(r.seconds for r in self.records)

    def __str__(self) -> str:
        lines = [f"pass statistics (total {self.total_seconds * 1e3:.2f} ms)"]
        lines += [f"  {r.seconds * 1e3:8.2f} ms  {r}" for r in self.records]
        return "\n".join(lines)


def parse_pass_pipeline(text: str) -> list[ModulePass]:
    """Pass instances for pipeline text like `fuse-rope-split-store,cse,dce{opt=1}`.

    Raises:
        ValueError: a syntax error, an unknown pass (listing the known ones), or a bad option.
    """
    try:
        specs = list(parse_pipeline(text))
    except ArgSpecParseError as err:  # a BaseException in xDSL; users want a ValueError
        raise ValueError(str(err)) from None
    known = available_passes()
    if unknown := [s.name for s in specs if s.name not in known]:
        raise ValueError(
            f"unknown pass {unknown[0]!r} in pipeline {text!r}; known passes: {', '.join(known)}"
        )
    passes = []
    for spec in specs:
        try:
            passes.append(known[spec.name]().from_pass_spec(spec))
        except (ValueError, TypeError) as err:
            raise ValueError(f"pass {spec.name!r}: {err}") from None
    return passes


def print_module(module: ModuleOp) -> str:
    """The module's text, as `str(graph)` prints it."""
    out = StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


class PassManager:
    """Runs passes over a Graph (or a ModuleOp) in place.

    Args:
        pipeline: pipeline text (`"fuse-rope-split-store,canonicalize,cse,dce"`, options as
            `name{opt=val}`) or a sequence of ModulePass instances.
        verify_each: verify after every pass; a failure raises PassVerifyError naming the pass.
        print_ir_before_all: dump the IR before every pass.
        print_ir_after_all: dump the IR after every pass.
        print_ir_after_change: dump the IR after a pass only when it changed the text.
        ir_dump: where dumps go: a text stream, or a folder path that receives numbered files
            (`00_before_cse.mlir`, ...). Default sys.stderr. Given with none of the print
            flags it means `print_ir_after_all`.
        debug: True (or a stream) echoes every refusal reason (`split result 1 has 2 users`)
            to sys.stderr (or the stream). Reasons are collected in the statistics anyway.

    Raises:
        ValueError: the pipeline text names an unknown pass or a bad option.
    """

    def __init__(
        self,
        pipeline: str | Sequence[ModulePass],
        *,
        verify_each: bool = True,
        print_ir_before_all: bool = False,
        print_ir_after_all: bool = False,
        print_ir_after_change: bool = False,
        ir_dump: TextIO | str | os.PathLike[str] | None = None,
        debug: bool | TextIO = False,
    ) -> None:
        self.passes = parse_pass_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        for p in self.passes:
            if not isinstance(p, ModulePass):
                raise TypeError(f"PassManager: expected ModulePass instances, got {type(p).__name__}")
        no_flag = not (print_ir_before_all or print_ir_after_all or print_ir_after_change)
        self.verify_each = verify_each
        self.print_before = print_ir_before_all
        self.print_after = print_ir_after_all or (ir_dump is not None and no_flag)
        self.print_after_change = print_ir_after_change
        self.ir_dump = ir_dump
        self.debug_stream: TextIO | None = sys.stderr if debug is True else (debug or None)

    @property
    def pipeline_text(self) -> str:
        """The pipeline as text, options included (what `-p` takes)."""
        return ",".join(str(p.spec()) for p in self.passes)

    def run(self, target: Graph | ModuleOp) -> PassStatistics:
        """Run every pass over `target` in place and return what they did.

        Raises:
            PassVerifyError: the input, or the IR after a pass, does not verify.
            PassFailedError: a pass raised; the message names it.
        """
        module = target.module if isinstance(target, Graph) else target
        run = _Run(self, module)
        run.verify(None)
        pipeline = PassPipeline(tuple(self.passes), callback=run.between)
        try:
            pipeline.apply(make_context(), module)
        except (PassVerifyError, PassFailedError):
            raise
        except Exception as err:
            name = run.running.name if run.running is not None else "?"
            raise PassFailedError(f"pass {name!r} failed: {type(err).__name__}: {err}") from err
        finally:
            run.close()
        return run.stats


class _Run:
    """The state of one `PassManager.run`: xDSL's PassPipeline calls `between` around passes."""

    def __init__(self, manager: PassManager, module: ModuleOp) -> None:
        self.m = manager
        self.module = module
        self.stats = PassStatistics()
        self.running: ModulePass | None = None
        self._started = 0.0
        self._before_text: str | None = None
        self._reporting: AbstractContextManager[PassReport] | None = None
        self._dumps = 0

    def between(self, prev: ModulePass | None, module: ModuleOp, nxt: ModulePass | None) -> None:
        if prev is not None:
            self._finish(prev)
        if nxt is not None:
            self._start(nxt)

    def _start(self, p: ModulePass) -> None:
        record = PassRecord(
            p.name, str(p.spec()), report=PassReport(p.name, debug_stream=self.m.debug_stream)
        )
        self.stats.records.append(record)
        if self.m.print_before:
            self.dump(f"Before {record.spec}")
        if self.m.print_after_change:
            self._before_text = print_module(self.module)
        self.running = p
        assert record.report is not None
        self._reporting = reporting(record.report)
        self._reporting.__enter__()
        self._started = time.perf_counter()

    def _finish(self, p: ModulePass) -> None:
        record = self.stats.records[-1]
        record.seconds = time.perf_counter() - self._started
        self.close()
        self.running = None
        if record.report is not None and "skipped" in record.report.counters:
            record.report.counters["skipped"] = record.report.refused
        if self.m.verify_each:
            self.verify(record.spec)
        if self._before_text is not None:
            record.changed = print_module(self.module) != self._before_text
            self._before_text = None
        if self.m.print_after or (self.m.print_after_change and record.changed):
            self.dump(f"After {record.spec}")

    def close(self) -> None:
        if self._reporting is not None:
            self._reporting.__exit__(None, None, None)
            self._reporting = None

    def verify(self, after: str | None) -> None:
        try:
            self.module.verify()
        except VerifyException as err:
            where = "the input IR" if after is None else f"the IR after pass {after!r}"
            raise PassVerifyError(f"{where} does not verify: {err}") from None

    def dump(self, title: str) -> None:
        text = print_module(self.module)
        dest = self.m.ir_dump if self.m.ir_dump is not None else sys.stderr
        if isinstance(dest, (str, os.PathLike)):
            folder = Path(dest)
            folder.mkdir(parents=True, exist_ok=True)
            slug = title.replace(" ", "_").replace("{", "_").replace("}", "").replace("=", "-")
            (folder / f"{self._dumps:02d}_{slug}.mlir").write_text(f"// IR Dump {title}\n{text}")
        else:
            dest.write(f"// -----// IR Dump {title} //----- //\n{text}\n")
        self._dumps += 1
