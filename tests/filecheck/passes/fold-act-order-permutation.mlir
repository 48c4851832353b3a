// RUN: fusegraph opt %s -p fold-act-order-permutation --split-input-file | filecheck %s
// RUN: fusegraph opt %s -p fold-act-order-permutation --split-input-file --debug 2>&1 >/dev/null | filecheck %s --check-prefix=WHY
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: silu(gate) * up has 2 users (its columns are needed unpermuted)
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: gate is produced by fg.matmul, not fg.qmatmul.gptq_tiled
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: neither operand of the fg.mul is an fg.silu
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: the fg.silu has 2 users
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: x is produced by a graph input, not by silu(gate) * up of GPTQ projections, fg.rms_norm or reshape(fg.attention.paged)
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: x is produced by fg.reshape, not by
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: the attention's output has other users (they need its columns unpermuted)
// WHY: fold-act-order-permutation: fg.qmatmul.gptq_tiled #{{[0-9]+}}: a buffer is written between the attention and the matmul (the attention cannot move)
// Folded: down_proj's x[:, perm] into the gate/up weights (stacked or separate, with a bias),
// the q/k/v and gate/up inputs' into fg.rms_norm perm (one per (norm, perm)), o_proj's into
// fg.attention.paged perm.
// Left (the matmul keeps perm, the reason in --debug): silu(gate) * up or the silu with another user,
// dense gate/up, relu instead of silu, x from a graph input, a reshape after the norm, an attention
// output read twice or followed by a cache write before o_proj.

// CHECK-LABEL: func.func @fold_stacked_gate_up
// CHECK: %{{.*}}, %{{.*}}, %[[P:[0-9]+]] = fg.gptq.repack
// CHECK: %[[QZ:[0-9]+]] = fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 2 : i64, packed_bits = 4 : i64}
// CHECK: %[[QW:[0-9]+]] = fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 2 : i64, packed_bits = 0 : i64}
// CHECK: %[[S:[0-9]+]] = fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 2 : i64, packed_bits = 0 : i64} : !fg.tensor<[1, 512], f16, cpu>
// CHECK: %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[GP:[0-9]+]] = fg.gptq.repack %[[QW]] zeros %[[QZ]]
// CHECK: %[[X:[0-9]+]] = fg.rms_norm %0, %{{[0-9]+}} perm %[[GP]]
// CHECK: %[[GU:[0-9]+]] = fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %[[S]], %[[ZT]] {bits
// CHECK: %[[A:[0-9]+]], %[[B:[0-9]+]] = fg.split %[[GU]]
// CHECK: %[[SA:[0-9]+]] = fg.silu %[[A]]
// CHECK: %[[Y:[0-9]+]] = fg.mul %[[SA]], %[[B]]
// CHECK: fg.qmatmul.gptq_tiled %[[Y]], %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @fold_stacked_gate_up(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "l0.mlp.gate_up_proj.qweight" : !fg.tensor<[16, 512], i32, cpu>
    %4 = fg.weight "l0.mlp.gate_up_proj.scales" : !fg.tensor<[1, 512], f16, cpu>
    %5 = fg.weight "l0.mlp.gate_up_proj.qzeros" : !fg.tensor<[1, 64], i32, cpu>
    %6 = fg.weight "l0.mlp.gate_up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 512], i32, cpu> zeros !fg.tensor<[1, 64], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 64], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    %11, %12 = fg.split %10 {axis = 1 : i64} : !fg.tensor<[m, 512], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
    %13 = fg.silu %11 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %14 = fg.mul %13, %12 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %15 = fg.weight "l0.mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %16 = fg.weight "l0.mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %17 = fg.weight "l0.mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %18 = fg.weight "l0.mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %19, %20, %21 = fg.gptq.repack %15 zeros %17 g_idx %18 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %22 = fg.qmatmul.gptq_tiled %14, %19, %16, %20 perm %21 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %22 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fold_separate_gate_up_bias
// CHECK: %{{.*}}, %{{.*}}, %[[P:[0-9]+]] = fg.gptq.repack
// CHECK-COUNT-3: fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 1 : i64
// CHECK: %[[G:[0-9]+]] = fg.qmatmul.gptq_tiled %[[XG:[0-9]+]], {{.*}} {bits
// CHECK: %[[BG:[0-9]+]] = fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 1 : i64, packed_bits = 0 : i64} : !fg.tensor<[256], f16, cpu>
// CHECK: %[[GB:[0-9]+]] = fg.add %[[G]], %[[BG]]
// CHECK-COUNT-3: fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 1 : i64
// CHECK: %[[U:[0-9]+]] = fg.qmatmul.gptq_tiled
// CHECK: %[[BU:[0-9]+]] = fg.gptq.permute_columns %{{[0-9]+}}, %[[P]] {parts = 1 : i64
// CHECK: %[[UB:[0-9]+]] = fg.add %[[U]], %[[BU]]
// CHECK: %[[SG:[0-9]+]] = fg.silu %[[GB]]
// CHECK: %[[Y:[0-9]+]] = fg.mul %[[SG]], %[[UB]]
// CHECK: fg.qmatmul.gptq_tiled %[[Y]], {{.*}} {bits
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @fold_separate_gate_up_bias(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "l0.mlp.gate_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %4 = fg.weight "l0.mlp.gate_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %5 = fg.weight "l0.mlp.gate_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %6 = fg.weight "l0.mlp.gate_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %11 = fg.weight "l0.mlp.gate_proj.bias" : !fg.tensor<[256], f16, cpu>
    %12 = fg.add %10, %11 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %13 = fg.weight "l0.mlp.up_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %14 = fg.weight "l0.mlp.up_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %15 = fg.weight "l0.mlp.up_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %16 = fg.weight "l0.mlp.up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %17, %18, %19 = fg.gptq.repack %13 zeros %15 g_idx %16 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %20 = fg.qmatmul.gptq_tiled %2, %17, %14, %18 perm %19 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %21 = fg.weight "l0.mlp.up_proj.bias" : !fg.tensor<[256], f16, cpu>
    %22 = fg.add %20, %21 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %23 = fg.silu %12 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %24 = fg.mul %23, %22 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %25 = fg.weight "l0.mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %26 = fg.weight "l0.mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %27 = fg.weight "l0.mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %28 = fg.weight "l0.mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %29, %30, %31 = fg.gptq.repack %25 zeros %27 g_idx %28 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %32 = fg.qmatmul.gptq_tiled %24, %29, %26, %30 perm %31 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %33 = fg.weight "l0.mlp.down_proj.bias" : !fg.tensor<[128], f16, cpu>
    %34 = fg.add %32, %33 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %34 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fold_norm_qkv
// CHECK: %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[P:[0-9]+]] = fg.gptq.repack
// CHECK: %[[X:[0-9]+]] = fg.rms_norm %0, %{{[0-9]+}} perm %[[P]] {eps
// CHECK: fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits
// CHECK-NOT: fg.rms_norm
// CHECK: fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @fold_norm_qkv(%0: !fg.tensor<[m, 128], f16, cpu>) -> (!fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>) {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "qkv_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %4 = fg.weight "qkv_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %5 = fg.weight "qkv_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %6 = fg.weight "qkv_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %11 = fg.weight "other.scales" : !fg.tensor<[1, 256], f16, cpu>
    %12 = fg.qmatmul.gptq_tiled %2, %7, %11, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    func.return %10, %12 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fold_two_layers
// CHECK: fg.rms_norm %{{[0-9]+}}, %{{[0-9]+}} perm
// CHECK: fg.qmatmul.gptq_tiled %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits
// CHECK: fg.qmatmul.gptq_tiled %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: fg.rms_norm %{{[0-9]+}}, %{{[0-9]+}} perm
// CHECK: fg.qmatmul.gptq_tiled %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits
// CHECK: fg.qmatmul.gptq_tiled %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} {bits
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @fold_two_layers(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "l0.norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "l0.mlp.gate_up_proj.qweight" : !fg.tensor<[16, 512], i32, cpu>
    %4 = fg.weight "l0.mlp.gate_up_proj.scales" : !fg.tensor<[1, 512], f16, cpu>
    %5 = fg.weight "l0.mlp.gate_up_proj.qzeros" : !fg.tensor<[1, 64], i32, cpu>
    %6 = fg.weight "l0.mlp.gate_up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 512], i32, cpu> zeros !fg.tensor<[1, 64], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 64], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    %11, %12 = fg.split %10 {axis = 1 : i64} : !fg.tensor<[m, 512], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
    %13 = fg.silu %11 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %14 = fg.mul %13, %12 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %15 = fg.weight "l0.mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %16 = fg.weight "l0.mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %17 = fg.weight "l0.mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %18 = fg.weight "l0.mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %19, %20, %21 = fg.gptq.repack %15 zeros %17 g_idx %18 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %22 = fg.qmatmul.gptq_tiled %14, %19, %16, %20 perm %21 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %23 = fg.weight "l1.norm.weight" : !fg.tensor<[128], f16, cpu>
    %24 = fg.rms_norm %22, %23 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %25 = fg.weight "l1.mlp.gate_up_proj.qweight" : !fg.tensor<[16, 512], i32, cpu>
    %26 = fg.weight "l1.mlp.gate_up_proj.scales" : !fg.tensor<[1, 512], f16, cpu>
    %27 = fg.weight "l1.mlp.gate_up_proj.qzeros" : !fg.tensor<[1, 64], i32, cpu>
    %28 = fg.weight "l1.mlp.gate_up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %29, %30, %31 = fg.gptq.repack %25 zeros %27 g_idx %28 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 512], i32, cpu> zeros !fg.tensor<[1, 64], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 64], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %32 = fg.qmatmul.gptq_tiled %24, %29, %26, %30 perm %31 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    %33, %34 = fg.split %32 {axis = 1 : i64} : !fg.tensor<[m, 512], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
    %35 = fg.silu %33 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %36 = fg.mul %35, %34 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %37 = fg.weight "l1.mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %38 = fg.weight "l1.mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %39 = fg.weight "l1.mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %40 = fg.weight "l1.mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %41, %42, %43 = fg.gptq.repack %37 zeros %39 g_idx %40 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %44 = fg.qmatmul.gptq_tiled %36, %41, %38, %42 perm %43 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %44 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fold_keeps_a_shared_repack
// CHECK: %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[GP:[0-9]+]] = fg.gptq.repack %{{[0-9]+}} zeros
// CHECK: fg.gptq.repack %{{[0-9]+}} zeros
// CHECK: fg.gptq.permute_columns
// CHECK: %[[QT2:[0-9]+]], %[[ZT2:[0-9]+]], %{{[0-9]+}} = fg.gptq.repack
// CHECK: fg.qmatmul.gptq_tiled %{{[0-9]+}}, %[[QT2]], %{{[0-9]+}}, %[[ZT2]] {bits
// CHECK: fg.qmatmul.gptq_tiled %0, %[[QT]], %{{[0-9]+}}, %[[ZT]] perm %[[GP]]
builtin.module {
  func.func @fold_keeps_a_shared_repack(%0: !fg.tensor<[m, 128], f16, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 512], f16, cpu>) {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "mlp.gate_up_proj.qweight" : !fg.tensor<[16, 512], i32, cpu>
    %4 = fg.weight "mlp.gate_up_proj.scales" : !fg.tensor<[1, 512], f16, cpu>
    %5 = fg.weight "mlp.gate_up_proj.qzeros" : !fg.tensor<[1, 64], i32, cpu>
    %6 = fg.weight "mlp.gate_up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 512], i32, cpu> zeros !fg.tensor<[1, 64], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 64], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    %11, %12 = fg.split %10 {axis = 1 : i64} : !fg.tensor<[m, 512], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
    %13 = fg.silu %11 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %14 = fg.mul %13, %12 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %15 = fg.weight "mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %16 = fg.weight "mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %17 = fg.weight "mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %18 = fg.weight "mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %19, %20, %21 = fg.gptq.repack %15 zeros %17 g_idx %18 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %22 = fg.qmatmul.gptq_tiled %14, %19, %16, %20 perm %21 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %23 = fg.qmatmul.gptq_tiled %0, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    func.return %22, %23 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 512], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_mul_has_another_user
// CHECK-NOT: fg.gptq.permute_columns
// CHECK: fg.rms_norm %0, %{{[0-9]+}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_mul_has_another_user(%0: !fg.tensor<[m, 128], f16, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>) {
    %1 = fg.weight "l0.norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "l0.mlp.gate_up_proj.qweight" : !fg.tensor<[16, 512], i32, cpu>
    %4 = fg.weight "l0.mlp.gate_up_proj.scales" : !fg.tensor<[1, 512], f16, cpu>
    %5 = fg.weight "l0.mlp.gate_up_proj.qzeros" : !fg.tensor<[1, 64], i32, cpu>
    %6 = fg.weight "l0.mlp.gate_up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 512], i32, cpu> zeros !fg.tensor<[1, 64], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 64], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[8, 16, 64], i32, cpu>, !fg.tensor<[1, 512], f16, cpu>, !fg.tensor<[1, 64], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 512], f16, cpu>
    %11, %12 = fg.split %10 {axis = 1 : i64} : !fg.tensor<[m, 512], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
    %13 = fg.silu %11 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %14 = fg.mul %13, %12 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %15 = fg.weight "l0.mlp.down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %16 = fg.weight "l0.mlp.down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %17 = fg.weight "l0.mlp.down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %18 = fg.weight "l0.mlp.down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %19, %20, %21 = fg.gptq.repack %15 zeros %17 g_idx %18 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %22 = fg.qmatmul.gptq_tiled %14, %19, %16, %20 perm %21 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %22, %14 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_dense_gate_up
// CHECK-NOT: fg.rms_norm {{.*}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_dense_gate_up(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "gate.weight" : !fg.tensor<[128, 256], f16, cpu>
    %4 = fg.matmul %2, %3 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %5 = fg.weight "up.weight" : !fg.tensor<[128, 256], f16, cpu>
    %6 = fg.matmul %2, %5 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %7 = fg.silu %4 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %8 = fg.mul %7, %6 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %9 = fg.weight "down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %10 = fg.weight "down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %11 = fg.weight "down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %12 = fg.weight "down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %13, %14, %15 = fg.gptq.repack %9 zeros %11 g_idx %12 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %16 = fg.qmatmul.gptq_tiled %8, %13, %10, %14 perm %15 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %16 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_relu_not_silu
// CHECK-NOT: fg.gptq.permute_columns
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @refuse_relu_not_silu(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "gate_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %4 = fg.weight "gate_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %5 = fg.weight "gate_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %6 = fg.weight "gate_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %11 = fg.weight "up_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %12 = fg.weight "up_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %13 = fg.weight "up_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %14 = fg.weight "up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %15, %16, %17 = fg.gptq.repack %11 zeros %13 g_idx %14 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %18 = fg.qmatmul.gptq_tiled %2, %15, %12, %16 perm %17 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %19 = fg.relu %10 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %20 = fg.mul %19, %18 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %21 = fg.weight "down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %22 = fg.weight "down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %23 = fg.weight "down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %24 = fg.weight "down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %25, %26, %27 = fg.gptq.repack %21 zeros %23 g_idx %24 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %28 = fg.qmatmul.gptq_tiled %20, %25, %22, %26 perm %27 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %28 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_silu_has_another_user
// CHECK-NOT: fg.gptq.permute_columns
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @refuse_silu_has_another_user(%0: !fg.tensor<[m, 128], f16, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>) {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.weight "gate_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %4 = fg.weight "gate_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %5 = fg.weight "gate_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %6 = fg.weight "gate_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %7, %8, %9 = fg.gptq.repack %3 zeros %5 g_idx %6 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %10 = fg.qmatmul.gptq_tiled %2, %7, %4, %8 perm %9 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %11 = fg.weight "up_proj.qweight" : !fg.tensor<[16, 256], i32, cpu>
    %12 = fg.weight "up_proj.scales" : !fg.tensor<[1, 256], f16, cpu>
    %13 = fg.weight "up_proj.qzeros" : !fg.tensor<[1, 32], i32, cpu>
    %14 = fg.weight "up_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %15, %16, %17 = fg.gptq.repack %11 zeros %13 g_idx %14 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 256], i32, cpu> zeros !fg.tensor<[1, 32], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 32], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %18 = fg.qmatmul.gptq_tiled %2, %15, %12, %16 perm %17 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[4, 16, 64], i32, cpu>, !fg.tensor<[1, 256], f16, cpu>, !fg.tensor<[1, 32], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %19 = fg.silu %10 : !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %20 = fg.mul %19, %18 : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[m, 256], f16, cpu> -> !fg.tensor<[m, 256], f16, cpu>
    %21 = fg.weight "down_proj.qweight" : !fg.tensor<[32, 128], i32, cpu>
    %22 = fg.weight "down_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %23 = fg.weight "down_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %24 = fg.weight "down_proj.g_idx" : !fg.tensor<[256], i32, cpu>
    %25, %26, %27 = fg.gptq.repack %21 zeros %23 g_idx %24 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[32, 128], i32, cpu> zeros !fg.tensor<[2, 16], i32, cpu> g_idx !fg.tensor<[256], i32, cpu> -> !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 16], i32, cpu>, !fg.tensor<[256], i32, cpu>
    %28 = fg.qmatmul.gptq_tiled %20, %25, %22, %26 perm %27 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 256], f16, cpu>, !fg.tensor<[2, 32, 64], i32, cpu>, !fg.tensor<[2, 128], f16, cpu>, !fg.tensor<[2, 16], i32, cpu> perm !fg.tensor<[256], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %28, %19 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 256], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_o_proj_input
// CHECK-NOT: fg.rms_norm {{.*}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_o_proj_input(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "o_proj.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %2 = fg.weight "o_proj.scales" : !fg.tensor<[1, 128], f16, cpu>
    %3 = fg.weight "o_proj.qzeros" : !fg.tensor<[1, 16], i32, cpu>
    %4 = fg.weight "o_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %5, %6, %7 = fg.gptq.repack %1 zeros %3 g_idx %4 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 128], i32, cpu> zeros !fg.tensor<[1, 16], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %8 = fg.qmatmul.gptq_tiled %0, %5, %2, %6 perm %7 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 128], f16, cpu>, !fg.tensor<[1, 16], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %8 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_reshape_after_norm
// CHECK-NOT: fg.rms_norm {{.*}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_reshape_after_norm(%0: !fg.tensor<[m, 128], f16, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %1 = fg.weight "norm.weight" : !fg.tensor<[128], f16, cpu>
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[128], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %3 = fg.reshape %2 : !fg.tensor<[m, 128], f16, cpu> -> !fg.tensor<[m, 2, 64], f16, cpu>
    %4 = fg.reshape %3 : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %5 = fg.weight "proj.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %6 = fg.weight "proj.scales" : !fg.tensor<[1, 128], f16, cpu>
    %7 = fg.weight "proj.qzeros" : !fg.tensor<[1, 16], i32, cpu>
    %8 = fg.weight "proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %9, %10, %11 = fg.gptq.repack %5 zeros %7 g_idx %8 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 128], i32, cpu> zeros !fg.tensor<[1, 16], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %12 = fg.qmatmul.gptq_tiled %4, %9, %6, %10 perm %11 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 128], f16, cpu>, !fg.tensor<[1, 16], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %12 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fold_attention_o_proj
// CHECK: %[[QT:[0-9]+]], %[[ZT:[0-9]+]], %[[P:[0-9]+]] = fg.gptq.repack
// CHECK: %[[A:[0-9]+]] = fg.attention.paged %0, %1, %2, %3, %4 perm %[[P]] {layer_idx = 0 : i64, scale = 1.250000e-01
// CHECK: %[[X:[0-9]+]] = fg.reshape %[[A]] : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
// CHECK: fg.qmatmul.gptq_tiled %[[X]], %[[QT]], %{{[0-9]+}}, %[[ZT]] {bits
// CHECK-NOT: fg.attention.paged
// CHECK-NOT: fg.qmatmul.gptq_tiled {{.*}} perm %
builtin.module {
  func.func @fold_attention_o_proj(%0: !fg.tensor<[m, 2, 64], f16, cpu>, %1: !fg.tensor<[b_plus_1], u32, cpu>, %2: !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, %3: !fg.tensor<[b], u32, cpu>, %4: !fg.tensor<[b, 2], u32, cpu>) -> !fg.tensor<[m, 128], f16, cpu> {
    %5 = fg.attention.paged %0, %1, %2, %3, %4 {layer_idx = 0 : i64, scale = 1.250000e-01 : f64, mask = "causal"} : !fg.tensor<[m, 2, 64], f16, cpu>, !fg.tensor<[b_plus_1], u32, cpu>, !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, !fg.tensor<[b], u32, cpu>, !fg.tensor<[b, 2], u32, cpu> -> !fg.tensor<[m, 2, 64], f16, cpu>
    %6 = fg.reshape %5 : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %7 = fg.weight "o_proj.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %8 = fg.weight "o_proj.scales" : !fg.tensor<[1, 128], f16, cpu>
    %9 = fg.weight "o_proj.qzeros" : !fg.tensor<[1, 16], i32, cpu>
    %10 = fg.weight "o_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %11, %12, %13 = fg.gptq.repack %7 zeros %9 g_idx %10 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 128], i32, cpu> zeros !fg.tensor<[1, 16], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %14 = fg.qmatmul.gptq_tiled %6, %11, %8, %12 perm %13 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 128], f16, cpu>, !fg.tensor<[1, 16], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %14 : !fg.tensor<[m, 128], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_attention_read_twice
// CHECK-NOT: fg.attention.paged {{.*}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_attention_read_twice(%0: !fg.tensor<[m, 2, 64], f16, cpu>, %1: !fg.tensor<[b_plus_1], u32, cpu>, %2: !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, %3: !fg.tensor<[b], u32, cpu>, %4: !fg.tensor<[b, 2], u32, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 2, 64], f16, cpu>) {
    %5 = fg.attention.paged %0, %1, %2, %3, %4 {layer_idx = 0 : i64, scale = 1.250000e-01 : f64, mask = "causal"} : !fg.tensor<[m, 2, 64], f16, cpu>, !fg.tensor<[b_plus_1], u32, cpu>, !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, !fg.tensor<[b], u32, cpu>, !fg.tensor<[b, 2], u32, cpu> -> !fg.tensor<[m, 2, 64], f16, cpu>
    %6 = fg.reshape %5 : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %7 = fg.weight "o_proj.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %8 = fg.weight "o_proj.scales" : !fg.tensor<[1, 128], f16, cpu>
    %9 = fg.weight "o_proj.qzeros" : !fg.tensor<[1, 16], i32, cpu>
    %10 = fg.weight "o_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %11, %12, %13 = fg.gptq.repack %7 zeros %9 g_idx %10 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 128], i32, cpu> zeros !fg.tensor<[1, 16], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %14 = fg.qmatmul.gptq_tiled %6, %11, %8, %12 perm %13 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 128], f16, cpu>, !fg.tensor<[1, 16], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %14, %5 : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[m, 2, 64], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_cache_written_before_o_proj
// CHECK-NOT: fg.attention.paged {{.*}} perm
// CHECK: fg.qmatmul.gptq_tiled {{.*}} perm %
// CHECK: func.return
builtin.module {
  func.func @refuse_cache_written_before_o_proj(%0: !fg.tensor<[m, 2, 64], f16, cpu>, %1: !fg.tensor<[b_plus_1], u32, cpu>, %2: !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, %3: !fg.tensor<[b], u32, cpu>, %4: !fg.tensor<[b, 2], u32, cpu>) -> (!fg.tensor<[m, 128], f16, cpu>, !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>) {
    %5 = fg.attention.paged %0, %1, %2, %3, %4 {layer_idx = 0 : i64, scale = 1.250000e-01 : f64, mask = "causal"} : !fg.tensor<[m, 2, 64], f16, cpu>, !fg.tensor<[b_plus_1], u32, cpu>, !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, !fg.tensor<[b], u32, cpu>, !fg.tensor<[b, 2], u32, cpu> -> !fg.tensor<[m, 2, 64], f16, cpu>
    %6 = fg.kv_cache.store %2, %0, %1, %3, %4 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>, !fg.tensor<[m, 2, 64], f16, cpu>, !fg.tensor<[b_plus_1], u32, cpu>, !fg.tensor<[b], u32, cpu>, !fg.tensor<[b, 2], u32, cpu> -> !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>
    %7 = fg.reshape %5 : !fg.tensor<[m, 2, 64], f16, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    %8 = fg.weight "o_proj.qweight" : !fg.tensor<[16, 128], i32, cpu>
    %9 = fg.weight "o_proj.scales" : !fg.tensor<[1, 128], f16, cpu>
    %10 = fg.weight "o_proj.qzeros" : !fg.tensor<[1, 16], i32, cpu>
    %11 = fg.weight "o_proj.g_idx" : !fg.tensor<[128], i32, cpu>
    %12, %13, %14 = fg.gptq.repack %8 zeros %10 g_idx %11 {bits = 4 : i64, group_size = 128 : i64, sym = false, desc_act = true, zero_format = "v1"} : !fg.tensor<[16, 128], i32, cpu> zeros !fg.tensor<[1, 16], i32, cpu> g_idx !fg.tensor<[128], i32, cpu> -> !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 16], i32, cpu>, !fg.tensor<[128], i32, cpu>
    %15 = fg.qmatmul.gptq_tiled %7, %12, %9, %13 perm %14 {bits = 4 : i64, group_size = 128 : i64, zero_format = "v1"} : !fg.tensor<[m, 128], f16, cpu>, !fg.tensor<[2, 16, 64], i32, cpu>, !fg.tensor<[1, 128], f16, cpu>, !fg.tensor<[1, 16], i32, cpu> perm !fg.tensor<[128], i32, cpu> -> !fg.tensor<[m, 128], f16, cpu>
    func.return %15, %6 : !fg.tensor<[m, 128], f16, cpu>, !fg.buffer<[8, 2, 1, 4, 2, 64], f16, cpu>
  }
}
