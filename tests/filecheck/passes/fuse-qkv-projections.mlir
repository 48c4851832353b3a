// RUN: fusegraph opt %s -p fuse-qkv-projections --split-input-file | filecheck %s

// CHECK-LABEL: func.func @fuse_linear
// CHECK: fg.concat {{.*}} {axis = 0 : i64}
// CHECK: fg.permute {{.*}} {perm = array<i64: 1, 0>} : !fg.tensor<[128, 64], f32, cpu> -> !fg.tensor<[64, 128], f32, cpu>
// CHECK: fg.matmul %0, 
// CHECK: fg.split {{.*}} {axis = 1 : i64} : !fg.tensor<[T, 128], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
// CHECK-NOT: fg.matmul
// CHECK: func.return
builtin.module {
  func.func @fuse_linear(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "layers.0.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %3 = fg.matmul %0, %2 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %4 = fg.weight "layers.0.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %5 = fg.permute %4 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %6 = fg.matmul %0, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %7 = fg.weight "layers.0.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %8 = fg.permute %7 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %9 = fg.matmul %0, %8 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %3, %6, %9 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_plain
// CHECK: fg.concat {{.*}} {axis = 1 : i64}
// CHECK: fg.matmul
// CHECK: fg.split
// CHECK-NOT: fg.matmul
// CHECK: func.return
builtin.module {
  func.func @fuse_plain(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "q_proj.weight_t" : !fg.tensor<[64, 64], f32, cpu>
    %2 = fg.matmul %0, %1 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %3 = fg.weight "k_proj.weight_t" : !fg.tensor<[64, 32], f32, cpu>
    %4 = fg.matmul %0, %3 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %5 = fg.weight "v_proj.weight_t" : !fg.tensor<[64, 32], f32, cpu>
    %6 = fg.matmul %0, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %2, %4, %6 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_gptq
// CHECK: fg.concat
// CHECK: fg.concat
// CHECK: fg.concat
// CHECK: fg.qmatmul.gptq %0, {{.*}} zeros {{.*}} g_idx %1 {bits = 4 : i64
// CHECK: fg.split
// CHECK-NOT: fg.qmatmul.gptq
// CHECK: func.return
builtin.module {
  func.func @fuse_gptq(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "g_idx" : !fg.tensor<[64], i32, cpu>
    %2 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %3 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %4 = fg.weight "q.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %2, %3 zeros %4 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %6 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %7 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %8 = fg.weight "k.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %9 = fg.qmatmul.gptq %0, %6, %7 zeros %8 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %10 = fg.weight "v.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %11 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %12 = fg.weight "v.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %13 = fg.qmatmul.gptq %0, %10, %11 zeros %12 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %5, %9, %13 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_gptq_no_g_idx
// CHECK: fg.qmatmul.gptq %0, %{{[0-9]+}}, %{{[0-9]+}} zeros %{{[0-9]+}} {bits = 4 : i64
// CHECK: fg.split
// CHECK-NOT: fg.qmatmul.gptq
// CHECK: func.return
builtin.module {
  func.func @fuse_gptq_no_g_idx(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %2 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %3 = fg.weight "q.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %4 = fg.qmatmul.gptq %0, %1, %2 zeros %3 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %5 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %6 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %7 = fg.weight "k.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %8 = fg.qmatmul.gptq %0, %5, %6 zeros %7 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %9 = fg.weight "v.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %10 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %11 = fg.weight "v.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %12 = fg.qmatmul.gptq %0, %9, %10 zeros %11 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %4, %8, %12 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_gptq_sym_no_zeros
// CHECK: fg.qmatmul.gptq %0, %{{[0-9]+}}, %{{[0-9]+}} g_idx
// CHECK: fg.split
builtin.module {
  func.func @fuse_gptq_sym_no_zeros(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "g_idx" : !fg.tensor<[64], i32, cpu>
    %2 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %3 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %4 = fg.qmatmul.gptq %0, %2, %3 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %5 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %6 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %7 = fg.qmatmul.gptq %0, %5, %6 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %8 = fg.weight "v.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %9 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %10 = fg.qmatmul.gptq %0, %8, %9 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %4, %7, %10 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_four_layers
// CHECK-COUNT-4: fg.split
// CHECK-NOT: fg.matmul %{{[0-9]+}}, %{{[0-9]+}} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64]
builtin.module {
  func.func @fuse_four_layers(%0: !fg.tensor<[T, 64], f32, cpu>, %1: !fg.tensor<[T, 64], f32, cpu>, %2: !fg.tensor<[T, 64], f32, cpu>, %3: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %4 = fg.weight "layers.0.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %5 = fg.permute %4 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %6 = fg.matmul %0, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %7 = fg.weight "layers.0.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %8 = fg.permute %7 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %9 = fg.matmul %0, %8 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %10 = fg.weight "layers.0.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %11 = fg.permute %10 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %12 = fg.matmul %0, %11 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %13 = fg.weight "layers.1.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %14 = fg.permute %13 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %15 = fg.matmul %1, %14 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %16 = fg.weight "layers.1.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %17 = fg.permute %16 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %18 = fg.matmul %1, %17 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %19 = fg.weight "layers.1.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %20 = fg.permute %19 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %21 = fg.matmul %1, %20 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %22 = fg.weight "layers.2.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %23 = fg.permute %22 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %24 = fg.matmul %2, %23 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %25 = fg.weight "layers.2.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %26 = fg.permute %25 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %27 = fg.matmul %2, %26 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %28 = fg.weight "layers.2.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %29 = fg.permute %28 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %30 = fg.matmul %2, %29 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %31 = fg.weight "layers.3.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %32 = fg.permute %31 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %33 = fg.matmul %3, %32 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %34 = fg.weight "layers.3.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %35 = fg.permute %34 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %36 = fg.matmul %3, %35 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %37 = fg.weight "layers.3.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %38 = fg.permute %37 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %39 = fg.matmul %3, %38 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %6, %9, %12, %15, %18, %21, %24, %27, %30, %33, %36, %39 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_two_projections
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_two_projections(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "layers.0.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %3 = fg.matmul %0, %2 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %4 = fg.weight "layers.0.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %5 = fg.permute %4 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %6 = fg.matmul %0, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %3, %6 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_mixed_layout
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_mixed_layout(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "layers.0.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %3 = fg.matmul %0, %2 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %4 = fg.weight "layers.0.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %5 = fg.permute %4 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %6 = fg.matmul %0, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %7 = fg.weight "layers.0.v_proj.weight_t" : !fg.tensor<[64, 32], f32, cpu>
    %8 = fg.matmul %0, %7 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %3, %6, %8 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_used_before_last
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_used_before_last(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "layers.0.q_proj.weight" : !fg.tensor<[64, 64], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 0>} : !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[64, 64], f32, cpu>
    %3 = fg.matmul %0, %2 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %4 = fg.relu %3 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %5 = fg.weight "layers.0.k_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %6 = fg.permute %5 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %7 = fg.matmul %0, %6 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %8 = fg.weight "layers.0.v_proj.weight" : !fg.tensor<[32, 64], f32, cpu>
    %9 = fg.permute %8 {perm = array<i64: 1, 0>} : !fg.tensor<[32, 64], f32, cpu> -> !fg.tensor<[64, 32], f32, cpu>
    %10 = fg.matmul %0, %9 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[64, 32], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %4, %7, %10 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_gptq_bits
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_gptq_bits(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "g_idx" : !fg.tensor<[64], i32, cpu>
    %2 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %3 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %4 = fg.weight "q.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %2, %3 zeros %4 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %6 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %7 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %8 = fg.weight "k.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %9 = fg.qmatmul.gptq %0, %6, %7 zeros %8 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %10 = fg.weight "v.qweight" : !fg.tensor<[16, 32], i32, cpu>
    %11 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %12 = fg.weight "v.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %13 = fg.qmatmul.gptq %0, %10, %11 zeros %12 g_idx %1 {bits = 8 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[16, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %5, %9, %13 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_gptq_zeros
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_gptq_zeros(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "g_idx" : !fg.tensor<[64], i32, cpu>
    %2 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %3 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %4 = fg.weight "q.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %2, %3 zeros %4 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %6 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %7 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %8 = fg.weight "k.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %9 = fg.qmatmul.gptq %0, %6, %7 zeros %8 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %10 = fg.weight "v.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %11 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %12 = fg.qmatmul.gptq %0, %10, %11 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %5, %9, %12 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_gptq_g_idx
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @refuse_gptq_g_idx(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>) {
    %1 = fg.weight "g_idx" : !fg.tensor<[64], i32, cpu>
    %2 = fg.weight "q.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %3 = fg.weight "q.scales" : !fg.tensor<[2, 64], f32, cpu>
    %4 = fg.weight "q.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %5 = fg.qmatmul.gptq %0, %2, %3 zeros %4 g_idx %1 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f32, cpu> zeros !fg.tensor<[2, 8], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %6 = fg.weight "k.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %7 = fg.weight "k.scales" : !fg.tensor<[2, 32], f32, cpu>
    %8 = fg.weight "k.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %9 = fg.weight "k.g_idx" : !fg.tensor<[64], i32, cpu>
    %10 = fg.qmatmul.gptq %0, %6, %7 zeros %8 g_idx %9 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    %11 = fg.weight "v.qweight" : !fg.tensor<[8, 32], i32, cpu>
    %12 = fg.weight "v.scales" : !fg.tensor<[2, 32], f32, cpu>
    %13 = fg.weight "v.qzeros" : !fg.tensor<[2, 4], i32, cpu>
    %14 = fg.weight "v.g_idx" : !fg.tensor<[64], i32, cpu>
    %15 = fg.qmatmul.gptq %0, %11, %12 zeros %13 g_idx %14 {bits = 4 : i64, group_size = 32 : i64, sym = true, desc_act = false, zero_format = "v1"} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[8, 32], i32, cpu>, !fg.tensor<[2, 32], f32, cpu> zeros !fg.tensor<[2, 4], i32, cpu> g_idx !fg.tensor<[64], i32, cpu> -> !fg.tensor<[T, 32], f32, cpu>
    func.return %5, %10, %15 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
  }
}
