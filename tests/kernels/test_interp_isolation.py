"""Interpreted kernel copies do not leak interpreter mode into the regular kernels (which
CUDA tests run): the variable is set only while a copy loads or runs (issue #14)."""

from __future__ import annotations

import os

import torch
import triton.language as tl
from triton.runtime.jit import JITFunction

import fusegraph.runtime.kernels.gptq_kernels as regular_gptq
import fusegraph.runtime.kernels.rope_split_store as regular_rope
from tests.kernels._interp import load_interpreted


def test_interp__leaves_the_regular_kernels_and_triton_compiled_after_a_launch() -> None:
    before = os.environ.get("TRITON_INTERPRET")
    tensor_attrs = dict(vars(tl.core.tensor))
    flag = load_interpreted("write_flag")
    words = torch.zeros(flag.FLAG_WORDS, dtype=torch.int64)
    u32 = torch.uint32
    flag.check_capacity_on_device(
        words, torch.tensor([0, 1], dtype=u32), torch.tensor([4], dtype=u32), torch.tensor([[0]], dtype=u32),
        1, 2, 4, 0,
    )  # fmt: skip
    assert words[0] == 1  # it ran, interpreted, on CPU tensors
    assert os.environ.get("TRITON_INTERPRET") == before
    assert isinstance(regular_rope._rope_split_store_kernel, JITFunction)
    assert isinstance(regular_gptq._gptq_gemv_kernel, JITFunction)
    assert isinstance(tl.cdiv, JITFunction)
    assert dict(vars(tl.core.tensor)) == tensor_attrs  # the interpreter's patches are gone
