"""The Triton GPTQ matmul (interpreted on the CPU) against a reference written from the format.

The test packs its own integers (value i of a word at bits [i·bits, (i+1)·bits), row r holding
k = r·32/bits + i; zeros packed the same way along N, v1 storing z − 1) and the reference is
W[k, n] = (q − z)·scales[g_idx[k], n] in float64, then x @ W.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels._interp import load_interpreted

kernel = load_interpreted("gptq_matmul")


def _pack_along_dim0(values: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    v = values.to(torch.int64).reshape(values.shape[0] // per, per, -1)
    word = torch.zeros(v.shape[0], v.shape[2], dtype=torch.int64)
    for i in range(per):
        word |= (v[:, i] & ((1 << bits) - 1)) << (i * bits)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def _make(k, n, bits, group_size, *, act_order, zero_format, with_zeros, seed):
    gen = torch.Generator().manual_seed(seed)
    gs = k if group_size == -1 else group_size
    groups = k // gs
    q = torch.randint(0, 2**bits, (k, n), generator=gen)
    g_idx = torch.arange(k) // gs
    if act_order:
        g_idx = g_idx[torch.randperm(k, generator=gen)]
    scales = (torch.rand(groups, n, generator=gen) * 0.02 + 0.005).to(torch.float16)
    tensors = {"qweight": _pack_along_dim0(q, bits), "scales": scales, "g_idx": g_idx.to(torch.int32)}
    if with_zeros:
        z = torch.randint(1, 2**bits, (groups, n), generator=gen)
        stored = z - 1 if zero_format == "v1" else z
        tensors["qzeros"] = _pack_along_dim0(stored.t().contiguous(), bits).t().contiguous()
    else:
        z = torch.full((groups, n), 2 ** (bits - 1))
    w = (q - z[g_idx.long()]).double() * scales[g_idx.long()].double()
    return tensors, w


CASES = [
    # (m, k, n, bits, group_size, act_order, zero_format, with_zeros, dtype, desc_act, config)
    (3, 256, 64, 4, 128, False, "v1", True, torch.float16, False, None),  # split-K, per-tile scales
    (1, 256, 48, 4, 64, True, "v2", True, torch.float16, True, None),  # act-order, N tail
    (5, 128, 32, 8, 32, False, "v1", True, torch.float32, None, None),  # 8-bit, g_idx path
    (2, 256, 32, 8, -1, False, "v2", False, torch.bfloat16, False, None),  # sym, one group
    (
        20,
        128,
        64,
        4,
        32,
        True,
        "v1",
        True,
        torch.float32,
        True,
        {"block_m": 16, "block_n": 32, "split_k": 1},
    ),  # large-M path, M tail
    (17, 256, 64, 2, 128, False, "v2", True, torch.float32, False, {"split_k": 1}),  # 2-bit
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_matmul_kernel__matches_dequantized_math(case):
    m, k, n, bits, gs, act_order, zf, with_zeros, dtype, desc_act, config = case
    t, w = _make(k, n, bits, gs, act_order=act_order, zero_format=zf, with_zeros=with_zeros, seed=m * k + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = x.double() @ w
    for _ in range(2):  # twice: the split-K workspace must come back clean
        y = kernel.gptq_matmul_triton(
            x,
            t["qweight"],
            t["scales"],
            t.get("qzeros"),
            t["g_idx"],
            bits=bits,
            group_size=gs,
            sym=not with_zeros,
            zero_format=zf,
            desc_act=desc_act,
            config=config,
        )
        assert y.dtype == dtype and y.shape == (m, n)
        err = (y.double() - ref).norm() / ref.norm()
        assert err < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype], err


def test_gptq_matmul_kernel__clip_clamps_the_dequantized_weight():
    t, w = _make(128, 32, 4, 32, act_order=False, zero_format="v1", with_zeros=True, seed=7)
    x = torch.randn(4, 128)
    ref = x.double() @ w.clamp(-0.03, 0.03)
    y = kernel.gptq_matmul_triton(
        x, t["qweight"], t["scales"], t["qzeros"], None, bits=4, group_size=32, clip=0.03
    )
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-5


def test_gptq_matmul_kernel__refuses_3_bits_and_missing_zeros():
    x, qw, s = torch.zeros(1, 32), torch.zeros(3, 4, dtype=torch.int32), torch.zeros(1, 4)
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        kernel.gptq_matmul_triton(x, qw, s, bits=3, group_size=-1, sym=True)
    with pytest.raises(ValueError, match="qzeros may be absent only when sym"):
        kernel.gptq_matmul_triton(x, torch.zeros(4, 4, dtype=torch.int32), s, bits=4, group_size=-1)
