// RUN: fusegraph opt %s -p fuse-add-rms-norm --split-input-file | filecheck %s
// RUN: fusegraph opt %s -p fuse-add-rms-norm --split-input-file --debug 2>&1 >/dev/null | filecheck %s --check-prefix=WHY
// WHY: fuse-add-rms-norm: fg.rms_norm #{{[0-9]+}}: the sum is read before the norm (by fg.silu)
// WHY: fuse-add-rms-norm: fg.rms_norm #{{[0-9]+}}: the add broadcasts (its operands differ in type from the sum)
// Fused: a residual add and the norm of its sum (two layers: the second add reads the first sum), with a perm,
// past an unused norm of the sum (erased). Refused: a sum read before the norm, an add that broadcasts.
// (Inputs printed from graphs built with the ops API.)
// CHECK-LABEL: func.func @fuse_two_layers
// CHECK: %[[H:[0-9]+]], %[[Y:[0-9]+]] = fg.add_rms_norm %0, %1, %{{[0-9]+}} {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
// CHECK-NEXT: %[[S:[0-9]+]] = fg.silu %[[Y]]
// CHECK: %[[O:[0-9]+]], %[[Y2:[0-9]+]] = fg.add_rms_norm %[[H]], %[[S]], %{{[0-9]+}}
// CHECK-NOT: fg.add %
// CHECK-NOT: fg.rms_norm
// CHECK: func.return %[[O]], %[[Y2]]
builtin.module {
  func.func @fuse_two_layers(%0: !fg.tensor<[t, 8], f16, cpu>, %1: !fg.tensor<[t, 8], f16, cpu>) -> (!fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>) {
    %2 = fg.weight "input_layernorm.weight" : !fg.tensor<[8], f16, cpu>
    %3 = fg.weight "post_attention_layernorm.weight" : !fg.tensor<[8], f16, cpu>
    %4 = fg.add %0, %1 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %5 = fg.rms_norm %4, %3 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %6 = fg.silu %5 : !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %7 = fg.add %4, %6 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %8 = fg.rms_norm %7, %2 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %7, %8 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_with_perm
// CHECK: %[[H:[0-9]+]], %[[Y:[0-9]+]] = fg.add_rms_norm %0, %1, %2 perm %3 {eps = 1.000000e-06 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> perm !fg.tensor<[8], i32, cpu> -> !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
// CHECK-NEXT: func.return %[[H]], %[[Y]]
builtin.module {
  func.func @fuse_with_perm(%0: !fg.tensor<[t, 8], f16, cpu>, %1: !fg.tensor<[t, 8], f16, cpu>) -> (!fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>) {
    %2 = fg.weight "norm.weight" : !fg.tensor<[8], f16, cpu>
    %3 = fg.weight "q_proj.perm" : !fg.tensor<[8], i32, cpu>
    %4 = fg.add %0, %1 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %5 = fg.rms_norm %4, %2 perm %3 {eps = 1.000000e-06 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> perm !fg.tensor<[8], i32, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %4, %5 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_past_a_dead_norm
// CHECK-NOT: fg.rms_norm
// CHECK: %[[H:[0-9]+]], %[[Y:[0-9]+]] = fg.add_rms_norm %0, %1, %{{[0-9]+}} perm %{{[0-9]+}}
// CHECK-NOT: fg.rms_norm
// CHECK: func.return %[[H]], %[[Y]]
builtin.module {
  func.func @fuse_past_a_dead_norm(%0: !fg.tensor<[t, 8], f16, cpu>, %1: !fg.tensor<[t, 8], f16, cpu>) -> (!fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>) {
    %2 = fg.weight "norm.weight" : !fg.tensor<[8], f16, cpu>
    %3 = fg.add %0, %1 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %4 = fg.rms_norm %3, %2 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %5 = fg.weight "q_proj.perm" : !fg.tensor<[8], i32, cpu>
    %6 = fg.rms_norm %3, %2 perm %5 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> perm !fg.tensor<[8], i32, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %3, %6 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_sum_read_before_norm
// CHECK: fg.add %0, %1
// CHECK: fg.rms_norm
// CHECK-NOT: fg.add_rms_norm
builtin.module {
  func.func @refuse_sum_read_before_norm(%0: !fg.tensor<[t, 8], f16, cpu>, %1: !fg.tensor<[t, 8], f16, cpu>) -> (!fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>) {
    %2 = fg.weight "norm.weight" : !fg.tensor<[8], f16, cpu>
    %3 = fg.add %0, %1 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %4 = fg.silu %3 : !fg.tensor<[t, 8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %5 = fg.rms_norm %3, %2 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %4, %5 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_broadcast
// CHECK: fg.add %0, %1
// CHECK-NEXT: fg.rms_norm
// CHECK-NOT: fg.add_rms_norm
builtin.module {
  func.func @refuse_broadcast(%0: !fg.tensor<[t, 8], f16, cpu>, %1: !fg.tensor<[8], f16, cpu>) -> !fg.tensor<[t, 8], f16, cpu> {
    %2 = fg.weight "norm.weight" : !fg.tensor<[8], f16, cpu>
    %3 = fg.add %0, %1 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %4 = fg.rms_norm %3, %2 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %4 : !fg.tensor<[t, 8], f16, cpu>
  }
}
