"""Terminal output of the demo: sections, IR, highlighted diffs, tables, and dumps."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

_COLORS = {"title": "1;36", "step": "1;33", "add": "32", "remove": "31", "dim": "2", "code": "36"}
_SSA = re.compile(r"%\d+")
_TYPE = re.compile(r"!fg\.(tensor|buffer)<\[([^\]]*)\], (\w+), ([\w:]+)>")


def short_types(text: str) -> str:
    """Abbreviate `!fg.tensor<[a, b], f32, cpu>` to `<a x b x f32>` for display only."""
    return _TYPE.sub(
        lambda m: ("buf" if m[1] == "buffer" else "") + "<" + " x ".join([*m[2].split(", "), m[3]]) + ">",
        text,
    )


class Printer:
    """Writes the demo's sections to stdout, and each IR stage to `dump_dir` when given."""

    def __init__(self, color: bool, dump_dir: Path | None) -> None:
        self.color = color and sys.stdout.isatty()
        self.dump_dir = dump_dir
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)

    def _paint(self, kind: str, text: str) -> str:
        return f"\x1b[{_COLORS[kind]}m{text}\x1b[0m" if self.color else text

    def title(self, text: str) -> None:
        """The banner."""
        print(self._paint("title", text))
        print(self._paint("title", "=" * len(text)))

    def step(self, n: int, text: str) -> None:
        """A numbered section heading."""
        print()
        print(self._paint("step", f"[{n}] {text}"))

    def text(self, text: str) -> None:
        """Plain text."""
        print(text, flush=True)

    def code(self, text: str) -> None:
        """One line of code or IR."""
        print("    " + self._paint("code", text))

    def progress(self, text: str) -> None:
        """A progress line (shown while slow work runs)."""
        print(self._paint("dim", "  .. " + text), flush=True)

    def dump(self, filename: str, text: str) -> None:
        """Write `text` to the dump folder, if any."""
        if self.dump_dir is not None:
            (self.dump_dir / filename).write_text(text)

    def ir(self, label: str, text: str, filename: str) -> None:
        """Print IR (types abbreviated for the screen; the dump keeps the exact text)."""
        self.dump(filename, text)
        print(
            self._paint(
                "dim", f"  {label} (types shortened for display; `print(graph)` gives the exact text):"
            )
        )
        for line in _body_lines(text):
            self.code(short_types(line))

    def diff(self, label: str, before: str, after: str, filename: str) -> None:
        """Print `after` in full, marking lines added (`+`) and removed (`-`) against `before`.

        SSA numbers are ignored when lining the two up, so renumbering is not a change.
        """
        self.dump(filename, after)
        print(self._paint("dim", f"  {label}:"))
        old, new = _body_lines(before), _body_lines(after)
        matcher = difflib.SequenceMatcher(
            a=[_unnumbered(x) for x in old], b=[_unnumbered(x) for x in new], autojunk=False
        )
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for line in new[j1:j2]:
                    print("    " + short_types(line))
                continue
            for line in old[i1:i2]:
                print("  " + self._paint("remove", "- " + short_types(line)))
            for line in new[j1:j2]:
                print("  " + self._paint("add", "+ " + short_types(line)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A plain aligned table."""
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
        print(line)
        print("-" * len(line))
        for row in rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def _unnumbered(line: str) -> str:
    return _SSA.sub("%_", line)


def _body_lines(text: str) -> list[str]:
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() not in ("}", "builtin.module {")
    ]
