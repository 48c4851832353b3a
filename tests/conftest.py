"""Fixtures for every test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _collect_earlier_tests_garbage_on_cuda() -> Iterator[None]:
    """On a CUDA machine, collect what earlier tests left in reference cycles before each test. A CUDA graph the
    collector frees inside a later test's capture breaks that capture ("operation not permitted when stream is
    capturing (function reset)"), and torch no longer collects before a capture (`force_cudagraph_gc` is off)."""
    if torch.cuda.is_available():
        gc.collect()
    yield
