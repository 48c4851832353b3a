"""Error types, and the helper that points a build error at the user's source line."""

from __future__ import annotations

import os
import sys
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IRParseError(ValueError):
    """Malformed IR text. The message starts with `file:line:col`."""


class IRVerifyError(ValueError):
    """The IR broke an invariant: a shape rule, a type, or a structural rule."""


def user_source_line() -> str:
    """`file:line` of the innermost stack frame outside the fusegraph package."""
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001 - cheap and what we need
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR) and "importlib" not in filename:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"
