"""A fuzz worker: reads mutants from stdin, one JSON line each, and answers one JSON line.

Each mutant is written to a file and read back with `read_ir_file` (as `fusegraph opt`
does), parsed, and when it parses: printed and parsed again (the printer's output must
parse to the same text), and run through `canonicalize,cse,dce`. The answer says whether
every stage ended in success or in one of the project's diagnostics ("diagnostic") or in
any other exception ("raw"), and how long the parse took in CPU seconds (so that a loaded
machine does not make a fast parse look slow; the driver's kill timeout is wall-clock).

Run by `tests/fuzz/run.py`; `python -m tests.fuzz.worker` reads until end of input.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from typing import Any

from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.dialect import parse, read_ir_file
from fusegraph.passes.manager import PassManager, PassVerifyError
from tests.fuzz.seeds import seed_texts

DIAGNOSTICS = (IRParseError, IRVerifyError, PassVerifyError)


def check(data: bytes, path: str) -> dict[str, Any]:
    """Run every stage on one mutant; the answer (without its id)."""
    with open(path, "wb") as f:
        f.write(data)
    stage, start = "parse", time.process_time()
    seconds = 0.0
    try:
        graph = parse(read_ir_file(path), path)
        seconds = time.process_time() - start
        stage = "reprint"
        text = str(graph)
        if str(parse(text, "<printed>")) != text:
            return {
                "outcome": "raw",
                "stage": stage,
                "error": "ReprintMismatch",
                "message": "",
                "seconds": seconds,
            }
        _ = graph.weights
        stage = "passes"
        PassManager("canonicalize,cse,dce").run(graph)
        str(graph)
    except DIAGNOSTICS as err:
        seconds = seconds or time.process_time() - start
        return {
            "outcome": "diagnostic",
            "stage": stage,
            "error": type(err).__name__,
            "message": _first(err),
            "seconds": seconds,
        }
    except Exception as err:  # what the fuzzer hunts
        seconds = seconds or time.process_time() - start
        return {
            "outcome": "raw",
            "stage": stage,
            "error": type(err).__name__,
            "message": _first(err),
            "seconds": seconds,
        }
    return {"outcome": "ok", "stage": "done", "error": "", "message": "", "seconds": seconds}


def _first(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def main() -> None:
    seed_texts()  # registers the examples' custom ops, as in the parent
    fd, path = tempfile.mkstemp(prefix="fusegraph-fuzz-", suffix=".mlir")
    os.close(fd)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            request = json.loads(line)
            answer = check(base64.b64decode(request["data"]), path)
            sys.stdout.write(json.dumps({"id": request["id"], **answer}) + "\n")
            sys.stdout.flush()
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
