// RUN: fusegraph opt %s -p gptq-repack --split-input-file | filecheck %s
// Refused (the op stays): a clip, group_size 64 (not a multiple of 128), N = 96 (not of 64).

// CHECK-LABEL: func.func @plain_4bit
// CHECK: %[[QT:.*]], %[[ZT:.*]] = fg.gptq.repack %{{.*}} zeros %{{.*}} g_idx %{{.*}} {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1"} {{.*}} -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]] {bits = 4 : i64, group_size = 128 : i64
// CHECK-NOT: fg.qmatmul.gptq %
builtin.module {
  func.func @plain_4bit(%0: !fg.tensor<[m, 256], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[2, 128], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %5 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @act_order_8bit
// CHECK: %[[QT:.*]], %[[ZT:.*]], %[[P:.*]] = fg.gptq.repack {{.*}}desc_act = true{{.*}} -> !fg.tensor<[2, 64, 64], i32, cpu>, !fg.tensor<[2, 32], i32, cpu>, !fg.tensor<[256], i32, cpu>
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]] perm %[[P]] {bits = 8 : i64
builtin.module {
  func.func @act_order_8bit(%0: !fg.tensor<[m, 256], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[64, 128], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[2, 128], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[2, 32], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 8 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[64, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 32], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %5 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @shared_weights
// CHECK: %[[QT:.*]], %[[ZT:.*]] = fg.gptq.repack {{.*}}bits = 4
// CHECK-NOT: fg.gptq.repack
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]]
// CHECK-NOT: fg.gptq.repack
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT]], %{{.*}}, %[[ZT]]
// CHECK: %[[QT2:.*]], %[[ZT2:.*]] = fg.gptq.repack {{.*}}bits = 2{{.*}}group_size = -1{{.*}} -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT2]], %{{.*}}, %[[ZT2]] {bits = 2
builtin.module {
  func.func @shared_weights(%0: !fg.tensor<[m, 256], f16, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 128], f16, cpu>) {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[2, 128], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %6 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %7 = fg.weight "l2.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %8 = fg.weight "l2.scales" : !fg.tensor<[1, 128], f16, cpu>
    %9 = fg.weight "l2.qzeros" : !fg.tensor<[1, 8], i32, cpu>
    %10 = fg.weight "l2.g_idx" : !fg.tensor<[256], i32, cpu>
    %11 = fg.qmatmul.gptq %0, %7, %8 zeros %9 g_idx %10 {bits = 2 : i64, group_size = -1 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[16, 128], i32, cpu>, !fg.tensor<[1, 128], f16, cpu> zeros !fg.tensor<[1, 8], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %5, %6, %11 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_clip
// CHECK-NOT: fg.gptq.repack
// CHECK: fg.qmatmul.gptq %
builtin.module {
  func.func @refuse_clip(%0: !fg.tensor<[m, 256], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[2, 128], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1", clip = 5.000000e-01 : f64} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %5 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_group_64
// CHECK-NOT: fg.gptq.repack
// CHECK: fg.qmatmul.gptq %
builtin.module {
  func.func @refuse_group_64(%0: !fg.tensor<[m, 256], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[4, 128], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[4, 16], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 64 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 128], i32, cpu>, !fg.tensor<[4, 128], f16, cpu> zeros !fg.tensor<[4, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %5 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_n_96
// CHECK-NOT: fg.gptq.repack
// CHECK: fg.qmatmul.gptq %
builtin.module {
  func.func @refuse_n_96(%0: !fg.tensor<[m, 256], f16, cpu>) -> !fg.tensor<[m, 96], f16, cpu> {
    %1 = fg.weight "l0.qweight" : !fg.tensor<[32, 96], i32, cpu>
    %2 = fg.weight "l0.scales" : !fg.tensor<[2, 96], f16, cpu>
    %3 = fg.weight "l0.qzeros" : !fg.tensor<[2, 12], i32, cpu>
    %4 = fg.weight "l0.g_idx" : !fg.tensor<[256], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %1, %2 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[32, 96], i32, cpu>, !fg.tensor<[2, 96], f16, cpu> zeros !fg.tensor<[2, 12], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 96], f16, cpu>
    func.return %5 : !fg.tensor<[m, 96], f16, cpu>
  }
}
