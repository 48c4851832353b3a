"""FileCheck cases of `fuse-silu-mul` (written by `generate.py`): graphs built with the ops API."""

from __future__ import annotations

from collections.abc import Callable

from fusegraph import DeviceRef, DType, Graph, TensorType, TensorValue, ops

CPU = DeviceRef.CPU()
F16 = DType.float16
I = 32  # noqa: E741 - the intermediate size
Case = tuple[Graph, list[str]]

WHY = [
    "the fg.silu has 2 users (its result is needed anyway)",
    "gate and up differ in type (the mul broadcasts)",
]
HEADER = (
    "// RUN: fusegraph opt %s -p fuse-silu-mul --split-input-file --debug 2>&1 >/dev/null"
    " | filecheck %s --check-prefix=WHY\n"
    + "".join(f"// WHY: fuse-silu-mul: fg.mul #{{{{[0-9]+}}}}: {w}\n" for w in WHY)
    + "// Fused: a stacked gate_up's split halves (the split goes), two operands (either order), a split whose\n"
    "// half has another user (two-operand form, the split stays), silu on the second half, three layers.\n"
    "// Refused: a silu with another user, an up that broadcasts.\n"
)


def _t(*shape: int | str) -> TensorType:
    return TensorType(F16, list(shape), CPU)


def _graph(name: str, inputs: list[TensorType], body: Callable[..., list[TensorValue]]) -> Graph:
    with Graph(name, input_types=inputs) as g:
        g.output(*body(*g.inputs))
    return g


def _halves(x: TensorValue) -> list[TensorValue]:
    return list(ops.split(x, [I, I], axis=1))


NO_UNFUSED = ["-NOT: fg.silu %", "-NOT: fg.mul", ": func.return"]


def fuse_silu_mul_cases() -> list[Case]:
    def stacked(x: TensorValue) -> list[TensorValue]:
        a, b = _halves(x)
        return [ops.silu(a) * b]

    def layers(x: TensorValue) -> list[TensorValue]:
        for _ in range(3):
            a, b = _halves(x)
            x = ops.concat([ops.silu(a) * b] * 2, axis=1)
        return [x]

    def reused_half(x: TensorValue) -> list[TensorValue]:
        a, b = _halves(x)
        return [ops.silu(a) * b, b]

    def second_half(x: TensorValue) -> list[TensorValue]:
        a, b = _halves(x)
        return [ops.silu(b) * a]

    def leak(a: TensorValue, b: TensorValue) -> list[TensorValue]:
        s = ops.silu(a)
        return [s * b, s]

    two = [_t("m", I), _t("m", I)]
    return [
        (_graph("fuse_stacked", [_t("m", 2 * I)], stacked), ["-LABEL: func.func @fuse_stacked",
         "-NEXT: %[[Y:[0-9]+]] = fg.silu_mul %0 : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>",
         "-NEXT: func.return %[[Y]]"]),
        (_graph("fuse_two", two, lambda a, b: [ops.silu(a) * b]), ["-LABEL: func.func @fuse_two",
         "-NEXT: %[[Y:[0-9]+]] = fg.silu_mul %0, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>",
         *NO_UNFUSED]),
        (_graph("fuse_up_first", two, lambda a, b: [b * ops.silu(a)]), ["-LABEL: func.func @fuse_up_first",
         "-NEXT: fg.silu_mul %0, %1 :", *NO_UNFUSED]),
        (_graph("fuse_split_half_reused", [_t("m", 2 * I)], reused_half), ["-LABEL: func.func @fuse_split_half_reused",
         ": %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %0", "-NEXT: fg.silu_mul %[[A]], %[[B]] :", *NO_UNFUSED]),
        (_graph("fuse_silu_on_second_half", [_t("m", 2 * I)], second_half),
         ["-LABEL: func.func @fuse_silu_on_second_half", ": %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %0",
          "-NEXT: fg.silu_mul %[[B]], %[[A]] :", *NO_UNFUSED]),
        (_graph("fuse_three_layers", [_t("m", 2 * I)], layers), ["-LABEL: func.func @fuse_three_layers",
         *[": fg.silu_mul %{{[0-9]+}} :"] * 3, *NO_UNFUSED]),
        (_graph("refuse_silu_has_another_user", two, leak), ["-LABEL: func.func @refuse_silu_has_another_user",
         "-NOT: fg.silu_mul", ": fg.mul", ": func.return"]),
        (_graph("refuse_broadcast", [_t("m", I), _t(I)], lambda a, b: [ops.silu(a) * b]),
         ["-LABEL: func.func @refuse_broadcast", "-NOT: fg.silu_mul", ": fg.mul", ": func.return"]),
    ]  # fmt: skip
