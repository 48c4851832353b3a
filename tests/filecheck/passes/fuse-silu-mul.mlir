// RUN: fusegraph opt %s -p fuse-silu-mul --split-input-file | filecheck %s
// RUN: fusegraph opt %s -p fuse-silu-mul --split-input-file --debug 2>&1 >/dev/null | filecheck %s --check-prefix=WHY
// WHY: fuse-silu-mul: fg.mul #{{[0-9]+}}: the fg.silu has 2 users (its result is needed anyway)
// WHY: fuse-silu-mul: fg.mul #{{[0-9]+}}: gate and up differ in type (the mul broadcasts)
// Fused: a stacked gate_up's split halves (the split goes), two operands (either order), a split whose
// half has another user (two-operand form, the split stays), silu on the second half, three layers.
// Refused: a silu with another user, an up that broadcasts.

// CHECK-LABEL: func.func @fuse_stacked
// CHECK-NEXT: %[[Y:[0-9]+]] = fg.silu_mul %0 : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
// CHECK-NEXT: func.return %[[Y]]
builtin.module {
  func.func @fuse_stacked(%0: !fg.tensor<[m, 64], f16, cpu>) -> !fg.tensor<[m, 32], f16, cpu> {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.silu %1 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %4 = fg.mul %3, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %4 : !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_two
// CHECK-NEXT: %[[Y:[0-9]+]] = fg.silu_mul %0, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
// CHECK-NOT: fg.silu %
// CHECK-NOT: fg.mul
// CHECK: func.return
builtin.module {
  func.func @fuse_two(%0: !fg.tensor<[m, 32], f16, cpu>, %1: !fg.tensor<[m, 32], f16, cpu>) -> !fg.tensor<[m, 32], f16, cpu> {
    %2 = fg.silu %0 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.mul %2, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %3 : !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_up_first
// CHECK-NEXT: fg.silu_mul %0, %1 :
// CHECK-NOT: fg.silu %
// CHECK-NOT: fg.mul
// CHECK: func.return
builtin.module {
  func.func @fuse_up_first(%0: !fg.tensor<[m, 32], f16, cpu>, %1: !fg.tensor<[m, 32], f16, cpu>) -> !fg.tensor<[m, 32], f16, cpu> {
    %2 = fg.silu %0 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.mul %1, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %3 : !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_split_half_reused
// CHECK: %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %0
// CHECK-NEXT: fg.silu_mul %[[A]], %[[B]] :
// CHECK-NOT: fg.silu %
// CHECK-NOT: fg.mul
// CHECK: func.return
builtin.module {
  func.func @fuse_split_half_reused(%0: !fg.tensor<[m, 64], f16, cpu>) -> (!fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>) {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.silu %1 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %4 = fg.mul %3, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %4, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_silu_on_second_half
// CHECK: %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %0
// CHECK-NEXT: fg.silu_mul %[[B]], %[[A]] :
// CHECK-NOT: fg.silu %
// CHECK-NOT: fg.mul
// CHECK: func.return
builtin.module {
  func.func @fuse_silu_on_second_half(%0: !fg.tensor<[m, 64], f16, cpu>) -> !fg.tensor<[m, 32], f16, cpu> {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.silu %2 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %4 = fg.mul %3, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %4 : !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_three_layers
// CHECK: fg.silu_mul %{{[0-9]+}} :
// CHECK: fg.silu_mul %{{[0-9]+}} :
// CHECK: fg.silu_mul %{{[0-9]+}} :
// CHECK-NOT: fg.silu %
// CHECK-NOT: fg.mul
// CHECK: func.return
builtin.module {
  func.func @fuse_three_layers(%0: !fg.tensor<[m, 64], f16, cpu>) -> !fg.tensor<[m, 64], f16, cpu> {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.silu %1 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %4 = fg.mul %3, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %5 = fg.concat %4, %4 {axis = 1 : i64} : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 64], f16, cpu>
    %6, %7 = fg.split %5 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %8 = fg.silu %6 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %9 = fg.mul %8, %7 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %10 = fg.concat %9, %9 {axis = 1 : i64} : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 64], f16, cpu>
    %11, %12 = fg.split %10 {axis = 1 : i64} : !fg.tensor<[m, 64], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
    %13 = fg.silu %11 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %14 = fg.mul %13, %12 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %15 = fg.concat %14, %14 {axis = 1 : i64} : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 64], f16, cpu>
    func.return %15 : !fg.tensor<[m, 64], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_silu_has_another_user
// CHECK-NOT: fg.silu_mul
// CHECK: fg.mul
// CHECK: func.return
builtin.module {
  func.func @refuse_silu_has_another_user(%0: !fg.tensor<[m, 32], f16, cpu>, %1: !fg.tensor<[m, 32], f16, cpu>) -> (!fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>) {
    %2 = fg.silu %0 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.mul %2, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %3, %2 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[m, 32], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_broadcast
// CHECK-NOT: fg.silu_mul
// CHECK: fg.mul
// CHECK: func.return
builtin.module {
  func.func @refuse_broadcast(%0: !fg.tensor<[m, 32], f16, cpu>, %1: !fg.tensor<[32], f16, cpu>) -> !fg.tensor<[m, 32], f16, cpu> {
    %2 = fg.silu %0 : !fg.tensor<[m, 32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    %3 = fg.mul %2, %1 : !fg.tensor<[m, 32], f16, cpu>, !fg.tensor<[32], f16, cpu> -> !fg.tensor<[m, 32], f16, cpu>
    func.return %3 : !fg.tensor<[m, 32], f16, cpu>
  }
}
