"""The kernels package registers a CUDA kernel for each op, and importing it on a CPU-only
machine neither fails nor changes what the ops do on CPU tensors."""

from __future__ import annotations

import torch

import fusegraph.runtime.kernels as kernels


def test_kernels__register_a_cuda_kernel_for_every_op():
    assert set(kernels.register_cuda_kernels()) == {
        "fusegraph::rope_split_store_",
        "fusegraph::kv_cache_store_",
        "fusegraph::qmatmul_gptq",
        "fusegraph::qmatmul_gptq_tiled",
        "fusegraph::paged_attention",
        "fusegraph::rms_norm",
        "fusegraph::add_rms_norm",
        "fusegraph::silu_mul",
    }
    for name in kernels.REGISTERED:
        namespace, op = name.split("::")
        handle = getattr(getattr(torch.ops, namespace), op).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(handle.name(), "CUDA"), name


def test_kernels__leave_the_cpu_implementation_in_place():
    q = torch.randn(2, 2, 8)
    kv = torch.randn(2, 2, 1, 4, 1, 8)
    out = torch.ops.fusegraph.paged_attention(
        q,
        torch.tensor([0, 2], dtype=torch.int32),
        kv,
        torch.tensor([0], dtype=torch.int32),
        torch.tensor([[1, 0]], dtype=torch.int32),
        0,
        8**-0.5,
        None,
    )
    # Row 0 sees only key 0, so its output is value 0 of its kv head.
    torch.testing.assert_close(out[0, 0], kv[1, 1, 0, 0, 0])
