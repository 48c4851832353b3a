"""The Triton GPTQ matmul (interpreted on the CPU) against a reference written from the format.

The test packs its own integers (value i of a word at bits [i·bits, (i+1)·bits), row r holding
k = r·32/bits + i; zeros packed the same way along N, v1 storing z − 1) and the reference is
W[k, n] = (q − z)·scales[g_idx[k], n] in float64, then x @ W.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels._interp import load_interpreted

kernel = load_interpreted("gptq_matmul", kernel_deps=("gptq_kernels",))


def _pack_along_dim0(values: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    v = values.to(torch.int64).reshape(values.shape[0] // per, per, -1)
    word = torch.zeros(v.shape[0], v.shape[2], dtype=torch.int64)
    for i in range(per):
        word |= (v[:, i] & ((1 << bits) - 1)) << (i * bits)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def _make(
    k: int,
    n: int,
    bits: int,
    group_size: int,
    *,
    act_order: bool,
    zero_format: str,
    with_zeros: bool,
    seed: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
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
def test_gptq_matmul_kernel__matches_dequantized_math(case: tuple[Any, ...]) -> None:
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


def test_gptq_matmul_kernel__clip_clamps_the_dequantized_weight() -> None:
    t, w = _make(128, 32, 4, 32, act_order=False, zero_format="v1", with_zeros=True, seed=7)
    x = torch.randn(4, 128)
    ref = x.double() @ w.clamp(-0.03, 0.03)
    y = kernel.gptq_matmul_triton(
        x, t["qweight"], t["scales"], t["qzeros"], None, bits=4, group_size=32, clip=0.03
    )
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-5


def test_gptq_matmul_kernel__refuses_3_bits_and_missing_zeros() -> None:
    x, qw, s = torch.zeros(1, 32), torch.zeros(3, 4, dtype=torch.int32), torch.zeros(1, 4)
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        kernel.gptq_matmul_triton(x, qw, s, bits=3, group_size=-1, sym=True)
    with pytest.raises(ValueError, match="qzeros may be absent only when sym"):
        kernel.gptq_matmul_triton(x, torch.zeros(4, 4, dtype=torch.int32), s, bits=4, group_size=-1)


FAST_CASES = [
    # (m, k, n, bits, group_size, zero_format, with_zeros, dtype, config)
    (1, 256, 64, 4, 128, "v1", True, torch.float16, {"kernel": "gemv", "block_n": 32, "split_k": 2}),
    (
        3,
        256,
        48,
        4,
        128,
        "v2",
        True,
        torch.float32,
        {"kernel": "gemv", "block_n": 32, "split_k": 1, "x_vec": 0},
    ),
    (2, 512, 32, 2, 256, "v1", False, torch.float32, {"kernel": "gemv", "block_n": 32}),
    (2, 256, 32, 8, -1, "v1", True, torch.bfloat16, {"kernel": "gemv", "block_n": 32, "split_k": 3}),
    (
        3,
        256,
        64,
        4,
        128,
        "v1",
        True,
        torch.float16,
        {"kernel": "mma", "block_m": 16, "block_n": 32, "split_k": 2},
    ),
    (
        20,
        256,
        48,
        4,
        128,
        "v2",
        True,
        torch.bfloat16,
        {"kernel": "mma", "block_m": 16, "block_n": 32, "nibble_dots": 1},
    ),
    (
        5,
        256,
        32,
        8,
        64,
        "v1",
        True,
        torch.float16,
        {"kernel": "mma", "block_m": 16, "block_n": 32, "nibble_dots": 1},
    ),
    (33, 256, 64, 4, 128, "v1", False, torch.float32, None),  # default pick
    # swapped operands (W^T as the dot's A), split-K and an N tail
    (
        3,
        256,
        48,
        4,
        128,
        "v1",
        True,
        torch.float16,
        {"kernel": "mma", "block_m": 16, "block_n": 32, "split_k": 2, "swap_ab": 1},
    ),  # fmt: skip
    (
        20,
        256,
        64,
        8,
        64,
        "v2",
        False,
        torch.bfloat16,
        {"kernel": "mma", "block_m": 16, "block_n": 64, "swap_ab": 1},
    ),  # fmt: skip
    (
        33,
        128,
        32,
        4,
        128,
        "v1",
        True,
        torch.float32,
        {"kernel": "mma", "block_m": 32, "block_n": 32, "swap_ab": 1},
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", FAST_CASES, ids=[f"fast{i}" for i in range(len(FAST_CASES))])
def test_gptq_matmul_kernel__fast_paths_match_dequantized_math(case: tuple[Any, ...]) -> None:
    """The GEMV (FMA, mantissa-bit unpacking) and tensor-core (per-tile scales) kernels, with and
    without split-K (partials reduced in a fixed order by a second kernel)."""
    m, k, n, bits, gs, zf, with_zeros, dtype, config = case
    t, w = _make(k, n, bits, gs, act_order=False, zero_format=zf, with_zeros=with_zeros, seed=m + k + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + 1)).to(dtype)
    ref = x.double() @ w
    y = kernel.gptq_matmul_triton(x, t["qweight"], t["scales"], t.get("qzeros"), None, bits=bits, group_size=gs,
                                  sym=not with_zeros, zero_format=zf, config=config)  # fmt: skip
    assert y.dtype == dtype and y.shape == (m, n)
    err = (y.double() - ref).norm() / ref.norm()
    assert err < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype], err


@pytest.mark.parametrize("bits,m", [(4, 1), (4, 17), (8, 2)])
def test_gptq_matmul_kernel__act_order_permuted_rows_equal_the_g_idx_path(bits: int, m: int) -> None:
    """act_order="permute" (rows sorted by argsort(g_idx) once, x's columns permuted) gives the
    g_idx-gather result, and the prepared weights are cached per tensor version."""
    t, w = _make(256, 32, bits, 64, act_order=True, zero_format="v1", with_zeros=True, seed=11 + m)
    x = torch.randn(m, 256, dtype=torch.float32)
    args = (x, t["qweight"], t["scales"], t["qzeros"], t["g_idx"])
    kw = {"bits": bits, "group_size": 64, "desc_act": True}
    y_perm = kernel.gptq_matmul_triton(*args, act_order="permute", **kw)
    y_gather = kernel.gptq_matmul_triton(*args, act_order="gather", **kw)
    ref = x.double() @ w
    assert ((y_perm.double() - ref).norm() / ref.norm()) < 1e-5
    torch.testing.assert_close(y_perm, y_gather, rtol=1e-5, atol=1e-5)
    prepared = kernel.act_order_prepare(t["qweight"], t["g_idx"], bits, 64)
    assert prepared is not None and prepared is kernel.act_order_prepare(t["qweight"], t["g_idx"], bits, 64)
    qw_sorted, perm = prepared
    _, w_sorted = _make(256, 32, bits, 64, act_order=True, zero_format="v1", with_zeros=True, seed=11 + m)
    assert torch.equal(perm, torch.argsort(t["g_idx"].long(), stable=True))
    # rows of the sorted weight are the original rows in perm order
    y_sorted = kernel.gptq_matmul_triton(x[:, perm], qw_sorted, t["scales"], t["qzeros"], None, bits=bits,
                                         group_size=64, desc_act=False)  # fmt: skip
    torch.testing.assert_close(y_sorted, y_gather, rtol=1e-5, atol=1e-5)


def test_gptq_matmul_kernel__act_order_with_uneven_groups_falls_back_to_g_idx() -> None:
    t, w = _make(128, 32, 4, 32, act_order=False, zero_format="v1", with_zeros=True, seed=5)
    g_idx = t["g_idx"].clone()
    g_idx[:8] = 1  # group 1 now has 40 rows: sorting cannot give k // group_size
    assert kernel.act_order_prepare(t["qweight"], g_idx, 4, 32) is None


DEQUANT_CASES = [
    # (m, k, n, bits, group_size, act_order, zero_format, with_zeros, dtype, clip, config)
    (3, 256, 48, 4, 128, False, "v1", True, torch.float16, None, {"kernel": "dequant", "dq_block_n": 32}),
    (5, 256, 64, 4, 64, True, "v2", True, torch.float32, None, {"kernel": "dequant", "dq_block_k": 128}),
    (2, 128, 32, 8, 32, False, "v1", False, torch.bfloat16, None, {"kernel": "dequant"}),
    (4, 256, 32, 2, -1, False, "v2", True, torch.float32, 0.05, {"kernel": "dequant", "dq_block_k": 32}),
    (256, 128, 32, 4, 32, False, "v1", True, torch.float32, None, None),  # default pick at M >= 256
]


@pytest.mark.parametrize("case", DEQUANT_CASES, ids=[f"dequant{i}" for i in range(len(DEQUANT_CASES))])
def test_gptq_matmul_kernel__prefill_dequantize_then_matmul_path(case: tuple[Any, ...]) -> None:
    """The large-M path: W dequantized once (act-order g_idx and clip applied in the pass, K tails
    masked) to a transient dense weight, then torch.matmul."""
    m, k, n, bits, gs, act_order, zf, with_zeros, dtype, clip, config = case
    t, w = _make(
        k, n, bits, gs, act_order=act_order, zero_format=zf, with_zeros=with_zeros, seed=m + 3 * k + n
    )
    if clip is not None:
        w = w.clamp(-clip, clip)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + 2)).to(dtype)
    ref = x.double() @ w
    for mode in ("permute", "gather") if act_order else ("permute",):  # sorted rows, or g_idx in the pass
        y = kernel.gptq_matmul_triton(x, t["qweight"], t["scales"], t.get("qzeros"),
                                      t["g_idx"] if act_order else None, bits=bits, group_size=gs,
                                      sym=not with_zeros, zero_format=zf, clip=clip, desc_act=act_order,
                                      act_order=mode, config=config)  # fmt: skip
        assert y.dtype == dtype and y.shape == (m, n)
        err = (y.double() - ref).norm() / ref.norm()
        assert err < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype], (mode, err)
