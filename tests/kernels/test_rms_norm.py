"""The Triton rms_norm kernel (interpreted on the CPU) against the float64 math: several rows a
program, one row chunked in BLOCK pieces, the perm gather, strided and non-contiguous inputs,
leading dims, empty inputs, and an eager ValueError for every mismatch."""

from __future__ import annotations

import pytest
import torch

from tests.kernels._interp import load_interpreted
from tests.ops.test_rms_norm_perm import ULPS, assert_within_ulps, reference

kernel = load_interpreted("rms_norm", kernel_deps=("pdl",))
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


def _operands(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    d = shape[-1]
    x = (torch.randn(*shape, generator=gen) * 3).to(dtype)
    w = (torch.rand(d, generator=gen) + 0.5).to(dtype)
    return x, w, torch.randperm(d, generator=gen).to(torch.int32)


@pytest.mark.parametrize(
    ("shape", "dtype", "max_block", "plan"),
    [
        ((5, 12), F16, None, {"ROWS": 8, "BLOCK": 16, "CHUNKED": False}),  # rows and columns masked
        ((2, 3, 128), BF16, None, {"ROWS": 8, "BLOCK": 128, "CHUNKED": False}),  # qk-norm shaped
        ((1, 40), F32, 16, {"ROWS": 1, "BLOCK": 16, "CHUNKED": True}),  # three chunks, a partial one
        ((3, 33), F16, 32, {"ROWS": 1, "BLOCK": 32, "CHUNKED": True}),
    ],
)
@pytest.mark.parametrize("with_perm", [False, True])
def test_rms_norm_rows__matches_the_math(
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    max_block: int | None,
    plan: dict[str, object],
    with_perm: bool,
) -> None:
    if max_block is not None:  # chunk short rows, as rows longer than 16384 columns are
        monkeypatch.setattr(kernel, "MAX_BLOCK", max_block)
    x, w, perm = _operands(shape, dtype, seed=len(shape) + shape[-1])
    p = perm if with_perm else None
    rows = x.numel() // shape[-1]
    assert plan.items() <= kernel.rms_norm_plan(rows, shape[-1]).items()
    y = kernel.rms_norm_rows(x, w, 1e-5, p)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous()
    assert_within_ulps(y, reference(x, w, 1e-5, p), ULPS[dtype])


@pytest.mark.parametrize(("shape", "split"), [((1, 40), 4), ((3, 64), 2), ((2, 2, 24), 8)])
def test_rms_norm_rows__splits_a_rows_permuted_stores_over_programs(
    shape: tuple[int, ...], split: int
) -> None:
    x, w, perm = _operands(shape, F16, seed=split)
    plan = kernel.rms_norm_plan(x.numel() // shape[-1], shape[-1], True, 1, split)
    assert plan["SPLIT"] == split and plan["grid"][1] == split
    assert_within_ulps(
        kernel.rms_norm_rows(x, w, 1e-5, perm, split=split), reference(x, w, 1e-5, perm), ULPS[F16]
    )


@pytest.mark.parametrize(
    ("shape", "split", "residual"), [((1, 40), 4, False), ((5, 12), 1, True), ((3, 64), 2, True)]
)
def test_rms_norm_rows__permuted_is_the_plain_result_gathered_bit_for_bit(
    shape: tuple[int, ...], split: int, residual: bool
) -> None:
    # fused (the norm writes the act-order GEMM's input permuted) equals unfused (norm, then x[:, perm])
    x, w, perm = _operands(shape, F16, seed=3 * split)
    if residual:
        r = _operands(shape, F16, seed=5)[0]
        s, y = kernel.add_rms_norm_rows(x, r, w, 1e-5, perm, split=split)
        s0, y0 = kernel.add_rms_norm_rows(x, r, w, 1e-5)
        assert torch.equal(s, s0)
    else:
        y, y0 = kernel.rms_norm_rows(x, w, 1e-5, perm, split=split), kernel.rms_norm_rows(x, w, 1e-5)
    assert torch.equal(y, y0.index_select(-1, perm.long()))


def test_rms_norm_plan__splits_only_permuted_rows_and_only_as_far_as_the_sms_go() -> None:
    assert kernel.rms_norm_plan(1, 4096, True, 132)["SPLIT"] == 16  # 4096 / 256 columns a program
    assert kernel.rms_norm_plan(16, 4096, True, 132)["SPLIT"] == 4  # 64 programs: half the SMs
    assert kernel.rms_norm_plan(32, 4096, True, 132)["SPLIT"] == 2
    assert kernel.rms_norm_plan(256, 4096, True, 132)["SPLIT"] == 1
    assert kernel.rms_norm_plan(1, 4096, False, 132)["SPLIT"] == 1
    assert kernel.rms_norm_plan(1, 20000, True, 132)["SPLIT"] == 1  # chunked
    for bad in (0, 3, 8192):
        with pytest.raises(
            ValueError, match=f"^fg.rms_norm: split must be a power of two <= 4096 .* got {bad}$"
        ):
            kernel.rms_norm_plan(1, 4096, True, 132, bad)


def test_rms_norm_rows__reads_strided_and_non_contiguous_rows() -> None:
    x, w, perm = _operands((4, 24), F32, seed=7)
    wide = torch.randn(4, 40)
    wide[:, 8:32] = x
    strided = wide[:, 8:32]  # row stride 40, unit column stride: read in place
    assert_within_ulps(kernel.rms_norm_rows(strided, w, 1e-6, perm), reference(x, w, 1e-6, perm), ULPS[F32])
    cols = x.t().contiguous().t()  # column-major: copied first
    assert_within_ulps(kernel.rms_norm_rows(cols, w, 1e-6), reference(x, w, 1e-6), ULPS[F32])


def test_rms_norm_rows__an_out_of_range_perm_entry_reads_zero() -> None:
    # Not a permutation, so the values are unspecified; what holds is memory safety: the entry
    # reads nothing out of bounds and its column is written (0), not left as torch.empty's bytes.
    x, w, _ = _operands((2, 8), F32, seed=1)
    y = kernel.rms_norm_rows(x, w, 1e-6, torch.tensor([7, 6, 5, 4, 3, 2, 1, 99], dtype=torch.int32))
    assert torch.equal(y[:, 7], torch.zeros(2)) and bool(y.isfinite().all())
    assert bool((y[:, :7] != 0).all())


def test_rms_norm_rows__empty_input() -> None:
    y = kernel.rms_norm_rows(torch.empty(0, 3, 16, dtype=F16), torch.ones(16, dtype=F16), 1e-6)
    assert y.shape == (0, 3, 16) and y.dtype == F16


@pytest.mark.parametrize(
    ("x", "w", "perm", "message"),
    [
        (
            torch.ones(2, 8, dtype=torch.float64),
            torch.ones(8),
            None,
            "input dtype must be float16, bfloat16 or",
        ),
        (torch.ones(()), torch.ones(1), None, "input must have rank >= 1, got a scalar"),
        (torch.ones(2, 8), torch.ones(4), None, r"weight shape \[4\] != \[8\] \(input dim -1\)"),
        (
            torch.ones(2, 8),
            torch.ones(8, dtype=F16),
            None,
            "weight dtype torch.float16 != input dtype torch.float32",
        ),
        (torch.ones(2, 8), torch.ones(8), torch.arange(8), "perm dtype must be int32, got torch.int64"),
        (
            torch.ones(2, 8),
            torch.ones(8),
            torch.zeros(2, 4, dtype=torch.int32),
            r"perm shape \[2, 4\] != \[8\]",
        ),
        (torch.ones(2, 8), torch.ones(8, device="meta"), None, "weight on meta, input on cpu"),
    ],
)
def test_rms_norm_rows__mismatches_raise_value_errors(
    x: torch.Tensor, w: torch.Tensor, perm: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^fg.rms_norm: {message}"):
        kernel.rms_norm_rows(x, w, 1e-6, perm)


@pytest.mark.parametrize(
    ("shape", "dtype", "split", "max_block"),
    [((3, 40), F16, None, None), ((1, 40), F32, 4, None), ((2, 2, 24), F16, 2, None), ((2, 40), F32, 1, 16)],
)
@pytest.mark.parametrize("with_perm", [False, True])
def test_add_rms_norm_rows__sum_as_the_add_and_norm_of_it(
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    split: int | None,
    max_block: int | None,
    with_perm: bool,
) -> None:
    if max_block is not None:
        monkeypatch.setattr(kernel, "MAX_BLOCK", max_block)
    x, w, perm = _operands(shape, dtype, seed=shape[-1])
    r, _, _ = _operands(shape, dtype, seed=shape[-1] + 1)
    p = perm if with_perm else None
    s, y = kernel.add_rms_norm_rows(x, r, w, 1e-5, p, split=None if not with_perm else split)
    assert torch.equal(s, x + r)  # fp16/fp32: the interpreter rounds as aten does (bf16 it truncates)
    assert_within_ulps(y, reference(x + r, w, 1e-5, p), ULPS[dtype])


def test_add_rms_norm_rows__a_residual_of_another_shape_or_dtype_raises() -> None:
    x, w = torch.ones(2, 8), torch.ones(8)
    for r, what in (
        (torch.ones(2, 4), r"\[2, 4\] torch.float32"),
        (torch.ones(2, 8, dtype=F16), r"\[2, 8\] torch.float16"),
    ):
        with pytest.raises(ValueError, match=f"^fg.add_rms_norm: rhs {what} on cpu != lhs"):
            kernel.add_rms_norm_rows(x, r, w, 1e-6)
    with pytest.raises(ValueError, match=r"^fg.add_rms_norm: weight shape \[4\] != \[8\]"):
        kernel.add_rms_norm_rows(x, x, torch.ones(4), 1e-6)


@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_op_kernels__permuted_apart_is_the_gathered_result_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, residual: bool
) -> None:
    # the op kernels' many-rows path (norm in order, then a permutation; aten's where
    # `permute_rows` cannot run, as here) against the in-kernel gather
    x, w, perm = _operands((6, 64), F16, seed=9)
    r = _operands((6, 64), F16, seed=10)[0]
    if residual:
        gathered = kernel.add_rms_norm_rows(x, r, w, 1e-5, perm)
        monkeypatch.setattr(kernel, "_many_rows", lambda x: True)
        apart = kernel.add_rms_norm_cuda(x, r, w, perm, 1e-5)
        assert torch.equal(apart[0], gathered[0]) and torch.equal(apart[1], gathered[1])
    else:
        gathered = kernel.rms_norm_rows(x, w, 1e-5, perm)
        monkeypatch.setattr(kernel, "_many_rows", lambda x: True)
        assert torch.equal(kernel.rms_norm_cuda(x, w, perm, 1e-5), gathered)


def test_rms_norm_op_kernels__check_the_perm_before_either_path() -> None:
    x, w, perm = _operands((64, 32), F16, seed=2)
    with pytest.raises(ValueError, match=r"fg\.rms_norm: perm dtype must be int32, got torch\.int64"):
        kernel.rms_norm_cuda(x, w, perm.long(), 1e-5)
    with pytest.raises(ValueError, match=r"fg\.add_rms_norm: perm shape \[2, 16\] != \[32\]"):
        kernel.add_rms_norm_cuda(x, x, w, perm.reshape(2, 16), 1e-5)
    twice = torch.arange(32, dtype=torch.int32)
    twice[5] = 1
    with pytest.raises(ValueError, match=r"perm\[1\] = perm\[5\] = 1"):
        kernel.rms_norm_cuda(x, w, twice, 1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_rows__the_weight_in_perm_order_equals_its_gather_in_the_kernel(
    residual: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the launcher passes weight[perm] (W_IN_PERM); under a first capture it cannot make one and the kernel gathers
    x, w, perm = _operands((3, 64), F16, seed=11)
    r = _operands((3, 64), F16, seed=12)[0]
    run = (lambda: kernel.add_rms_norm_rows(x, r, w, 1e-5, perm)[1]) if residual else (
        lambda: kernel.rms_norm_rows(x, w, 1e-5, perm))  # fmt: skip
    in_perm = run()
    assert torch.equal(kernel._weight_in_perm_order(w, perm), w[perm.long()])
    monkeypatch.setattr(kernel, "_weight_in_perm_order", lambda weight, perm: None)
    assert torch.equal(run(), in_perm)
    assert_within_ulps(in_perm, reference(x + r if residual else x, w, 1e-5, perm), ULPS[F16])


def test_weight_in_perm_order__kept_per_pair_and_made_again_once_either_is_written() -> None:
    _, w, perm = _operands((1, 32), F16, seed=13)
    first = kernel._weight_in_perm_order(w, perm)
    assert kernel._weight_in_perm_order(w, perm) is first
    w.mul_(2)  # the weight written: its version moves
    again = kernel._weight_in_perm_order(w, perm)
    assert again is not first and torch.equal(again, w[perm.long()])
    other = perm.flip(0).contiguous()  # another perm for the same weight
    assert torch.equal(kernel._weight_in_perm_order(w, other), w[other.long()])
    perm[0], perm[1] = perm[1].item(), perm[0].item()  # the perm written in place
    assert torch.equal(kernel._weight_in_perm_order(w, perm), w[perm.long()])
    bad = torch.tensor([3, -1, 0, 99], dtype=torch.int32)  # an entry outside [0, D) gets weight 0
    assert kernel._weight_in_perm_order(torch.ones(4, dtype=F16), bad).tolist() == [1.0, 0.0, 1.0, 0.0]
